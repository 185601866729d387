"""Browsing a session's working directory: list one directory, read one file, never through a symlink.

The agent controls this directory and may swap any entry for a link at any moment, so a path is never resolved as
a string. It is walked one component at a time, each opened relative to its parent's descriptor with O_NOFOLLOW:
a component that is (or has just become) a link fails to open instead of being followed, and what is read is the
very file that was checked. Links are listed as links (their own lstat), as in the tar download (security
property 7). Fifos, sockets and devices are neither listed nor read (reading one can block forever).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

MAX_PATH_CHARS = 4096
MAX_LIST_ENTRIES = 1000
# How many names one listing looks at, at most: past that the answer is marked truncated (a directory of millions
# of files must not hold a worker for minutes).
MAX_SCANNED_ENTRIES = 200_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a fifo swapped in after the listing must not block the open; reads of regular files ignore it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 64 * 1024

EntryType = Literal["file", "dir", "symlink"]


class FileNotInWorkdir(Exception):
    """Missing, outside the working directory, reached through a link, or not a regular file or directory."""


class IsADirectory(Exception):
    pass


class NotADirectory(Exception):
    pass


class FileTooLarge(Exception):
    def __init__(self, size: int, max_bytes: int) -> None:
        super().__init__(f"file holds more than {max_bytes} bytes ({size} seen)")
        self.size = size
        self.max_bytes = max_bytes


@dataclass(frozen=True)
class FileEntry:
    name: str
    path: str
    type: EntryType
    size: int
    modified_at: datetime


@dataclass(frozen=True)
class Listing:
    path: str
    entries: list[FileEntry]
    truncated: bool


@dataclass(frozen=True)
class FileContent:
    path: str
    name: str
    data: bytes


def normalize(path: str | None) -> list[str]:
    """The components of a client's relative path; "" (or None, ".", "./") is the root itself.

    Refused (FileNotInWorkdir): NUL, an absolute path, any `..`, and paths past MAX_PATH_CHARS. Empty and `.`
    components are dropped, so `a//b/./c/` names `a/b/c`. Nothing else is interpreted: `~` and backslashes are
    ordinary characters of a name.
    """
    if not path:
        return []
    if "\x00" in path or len(path) > MAX_PATH_CHARS or path.startswith("/"):
        raise FileNotInWorkdir(path[:100])
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FileNotInWorkdir(path[:100])
    return parts


class _NotADirectoryAt(Exception):
    """Component `index` of the path is a regular file."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _is_regular_file(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISREG(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def _open_dir(root: Path, parts: list[str]) -> Iterator[int]:
    """A descriptor of the directory `parts` names below root, every component opened without following a link."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise FileNotInWorkdir("") from exc
    try:
        for index, name in enumerate(parts):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except NotADirectoryError as exc:
                # Linux answers ENOTDIR for a link too (O_DIRECTORY | O_NOFOLLOW): only a regular file is "not a
                # directory"; the answer only picks the error, the link is not followed either way.
                if _is_regular_file(name, fd):
                    raise _NotADirectoryAt(index) from exc
                raise FileNotInWorkdir(name) from exc
            except (OSError, ValueError, UnicodeError) as exc:  # ELOOP (a link), ENOENT, ENAMETOOLONG, ...
                raise FileNotInWorkdir(name) from exc
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _entry_type(mode: int) -> EntryType | None:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return None


def _display(name: str) -> str:
    # A name that is not UTF-8 comes back from the OS with surrogate escapes, which JSON cannot carry.
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _sort_key(entry: os.DirEntry[str]) -> tuple[bool, str]:
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        is_dir = False
    return (not is_dir, entry.name)


class _Scan:
    """The listable entries among the first `cap` names of a directory; `listed` counts them, `more` tells whether
    names were left unread past `cap`."""

    def __init__(self, entries: Iterator[os.DirEntry[str]], cap: int) -> None:
        self.entries, self.cap = entries, cap
        self.scanned = self.listed = 0
        self.more = False

    def __iter__(self) -> Iterator[os.DirEntry[str]]:
        for entry in self.entries:
            if self.scanned >= self.cap:
                self.more = True
                return
            self.scanned += 1
            if _is_listed(entry):
                self.listed += 1
                yield entry


def _entry(fd: int, prefix: str, entry: os.DirEntry[str]) -> FileEntry | None:
    try:
        st = os.lstat(entry.name, dir_fd=fd)  # the link itself, never its target
    except OSError:
        return None  # removed since it was listed
    kind = _entry_type(st.st_mode)
    if kind is None:
        return None
    name = _display(entry.name)
    return FileEntry(
        name=name,
        path=f"{prefix}/{name}" if prefix else name,
        type=kind,
        size=st.st_size,
        modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
    )


def list_dir(root: Path, path: str | None, limit: int = MAX_LIST_ENTRIES) -> Listing:
    """The entries of one directory below root: directories first, then by name, at most `limit` of them
    (`truncated` says when there were more). NotADirectory when the path names a regular file."""
    parts = normalize(path)
    prefix = "/".join(parts)
    try:
        with _open_dir(root, parts) as fd, os.scandir(fd) as it:
            scan = _Scan(it, MAX_SCANNED_ENTRIES)
            # Only `limit` entries are ever held, however large the directory.
            chosen = heapq.nsmallest(limit, scan, key=_sort_key)
            entries = [found for e in chosen if (found := _entry(fd, prefix, e)) is not None]
    except _NotADirectoryAt as exc:
        if exc.index == len(parts) - 1:
            raise NotADirectory(prefix) from exc
        raise FileNotInWorkdir(prefix[:100]) from exc
    return Listing(path=prefix, entries=entries, truncated=scan.more or scan.listed > len(chosen))


def _is_listed(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False) or entry.is_symlink()
    except OSError:
        return False


def read_file(root: Path, path: str | None, max_bytes: int) -> FileContent:
    """The bytes of one regular file below root, up to max_bytes (FileTooLarge past that, also for a file that
    grows while it is read). IsADirectory for a directory; FileNotInWorkdir for anything else that is not a file."""
    parts = normalize(path)
    if not parts:
        raise IsADirectory("")
    try:
        with _open_dir(root, parts[:-1]) as parent:
            try:
                fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
            except (OSError, ValueError, UnicodeError) as exc:
                raise FileNotInWorkdir(parts[-1]) from exc
    except _NotADirectoryAt as exc:
        raise FileNotInWorkdir(str(path)[:100]) from exc
    try:
        st = os.fstat(fd)  # of what was opened: no window between this check and the read
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectory(parts[-1])
        if not stat.S_ISREG(st.st_mode):
            raise FileNotInWorkdir(parts[-1])
        if st.st_size > max_bytes:
            raise FileTooLarge(st.st_size, max_bytes)
        data = bytearray()
        # One byte past the cap is enough to know the file grew past it since the fstat.
        while len(data) <= max_bytes and (chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - len(data)))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise FileTooLarge(len(data), max_bytes)
    return FileContent(path="/".join(parts), name=parts[-1], data=bytes(data))


def is_text(data: bytes) -> bool:
    """Valid UTF-8 without NUL characters."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
