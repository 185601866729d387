"""The files of a session's working directory, read-only: list a directory, read one file (size-capped).

Under the download's rules (security property 7): nothing is read through a symlink, at any component, however
the agent rearranges the directory meanwhile (`runtime.workdir_files`). A path that is missing, outside the working
directory or reached through a link answers the same 404, so nothing about the host can be learnt from it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_api.errors import BadRequest, NotFound, PayloadTooLarge
from agent_api.models import Session
from agent_api.runtime import workdir_files
from agent_api.sessions import service
from agent_api.state import AppState


def _root(state: AppState, s: Session) -> Path:
    root = service.workdir_of(state, s.id)
    if not root.is_dir():
        raise NotFound("The working directory is not present (archived or deleted)", code="workdir_not_found")
    return root


def _not_found() -> NotFound:
    return NotFound("No such file or directory in the working directory", code="file_not_found")


async def list_files(state: AppState, s: Session, path: str | None) -> workdir_files.Listing:
    """One directory's entries; 404 for a path that is missing, outside or through a link, 400 for a file."""
    root = _root(state, s)
    try:
        return await asyncio.to_thread(workdir_files.list_dir, root, path)
    except workdir_files.FileNotInWorkdir as exc:
        raise _not_found() from exc
    except workdir_files.NotADirectory as exc:
        raise BadRequest(
            "The path names a file, not a directory: read it with /files/content", code="not_a_directory"
        ) from exc


async def read_file(state: AppState, s: Session, path: str | None) -> workdir_files.FileContent:
    """One regular file's bytes; 404 as for a listing, 400 for a directory, 413 over `max_file_view_bytes`."""
    root = _root(state, s)
    limit = state.settings.max_file_view_bytes
    try:
        return await asyncio.to_thread(workdir_files.read_file, root, path, limit)
    except workdir_files.FileNotInWorkdir as exc:
        raise _not_found() from exc
    except workdir_files.IsADirectory as exc:
        raise BadRequest("The path names a directory: list it with /files", code="is_a_directory") from exc
    except workdir_files.FileTooLarge as exc:
        raise PayloadTooLarge(
            f"The file is larger than {limit} bytes: download the working directory instead",
            code="file_too_large",
            details={"max_bytes": limit},
        ) from exc
