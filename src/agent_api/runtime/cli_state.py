"""The agent CLI's state directory (`CLAUDE_CONFIG_DIR`): one per session.

The CLI keeps its conversations (transcripts, which hold every prompt, tool input and tool output) in its state
directory, and the confined CLI (`runtime.confine`) must see that directory. A single one shared by every session
showed each agent every other session's conversations: to a tool running in the CLI process or its children (an
MCP stdio server reading a path, a file tool raced through a link). So each session's agents get a directory of
their own below the shared root, and only it is mounted into their world.

A conversation is resumed from the session's own directory; a fork's first start brings its parent's conversation
over from the parent's directory, and one kept in the shared root (before directories were per session) is brought
over the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

AGENTS_DIR = "agents"
# What the CLI's session ids look like (UUIDs); anything else is never used to build a path.
_SDK_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def state_dir(root: Path, session_id: uuid.UUID) -> Path:
    return root / AGENTS_DIR / str(uuid.UUID(str(session_id)))


def _find(root: Path, sdk_session_id: str) -> Path | None:
    """The transcript of that conversation below `root`, if it holds one (a regular file, never a link)."""
    projects = root / "projects"
    if projects.is_symlink() or not projects.is_dir():
        return None
    for candidate in sorted(projects.glob(f"*/{sdk_session_id}.jsonl")):
        if not candidate.parent.is_symlink() and not candidate.is_symlink() and candidate.is_file():
            return candidate
    return None


def prepare(root: Path, session_id: uuid.UUID, resume: str | None, resume_from: uuid.UUID | None) -> Path:
    """Make the session's state directory, holding the conversation `resume` names when there is one to resume:
    brought over from the directory of `resume_from` (a fork's parent) or from the shared root."""
    own = state_dir(root, session_id)
    own.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not resume or not _SDK_SESSION_ID.match(resume) or _find(own, resume) is not None:
        return own
    sources = [state_dir(root, resume_from)] if resume_from is not None else []
    for source in [*sources, root]:
        found = _find(source, resume)
        if found is None:
            continue
        target = own / found.relative_to(source)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The state directory is the agent's to write: this runs outside its confinement, so nothing here may
        # follow a link the agent planted. Files arrive under fresh names and are renamed over whatever is there.
        if not _plain_dir_inside(target.parent, own):
            break
        fresh = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        shutil.copyfile(found, fresh, follow_symlinks=False)
        os.chmod(fresh, 0o600)
        os.replace(fresh, target)
        # Large tool results and subagents' conversations live in a directory named after the conversation.
        extra, extra_target = found.with_suffix(""), target.with_suffix("")
        if extra.is_dir() and not extra.is_symlink() and not os.path.lexists(extra_target):
            staged = extra_target.with_name(f".{extra_target.name}.{uuid.uuid4().hex}")
            shutil.copytree(extra, staged, symlinks=True)
            os.rename(staged, extra_target)
        break
    return own


def _plain_dir_inside(directory: Path, root: Path) -> bool:
    """Whether `directory` is a real directory below `root` with no link on the way."""
    real_root = os.path.realpath(root)
    current = directory
    while current != root:
        if current.is_symlink() or not current.is_dir():
            return False
        if current.parent == current:
            return False
        current = current.parent
    return os.path.realpath(directory).startswith(real_root + os.sep)
