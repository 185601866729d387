"""Session working directories: layout, the file-tool path guard, and size-capped tar streams, copies and archives.

Security property 7: nothing here ever reads through a symlink. Directories are walked with `os.fwalk` and every
entry is opened relative to its parent's descriptor with O_NOFOLLOW, so even a file swapped for a link while the
walk runs (the agent may still be working) is skipped rather than read; links travel as links.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import shutil
import stat
import tarfile
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, cast

PRODUCER_THREAD_NAME = "workdir-tar-producer"
_QUEUE_CHUNKS = 8  # with the chunk size, this bounds the memory a slow client can pin
_POLL_S = 0.1  # how quickly a blocked producer or taker notices that the other side went away
_CHUNK = 64 * 1024
_DONE = object()

_Kind = Literal["dir", "file", "symlink"]
# Anything else (fifos, sockets, devices) is skipped: reading one can block forever or never end.
_KINDS: dict[int, _Kind] = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink"}
_TAR_TYPES = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}


class WorkdirTooLarge(Exception):
    def __init__(self, size: int, max_bytes: int) -> None:
        super().__init__(f"working directory holds more than {max_bytes} bytes ({size} counted)")
        self.size = size
        self.max_bytes = max_bytes


class UnsafeArchive(Exception):
    """An archive member would land outside the destination, or is a hard link or special file."""


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    size_bytes: int
    file_count: int
    sha256: str


def workdir_root(data_dir: Path) -> Path:
    return data_dir / "workdirs"


def session_workdir(data_dir: Path, session_id: uuid.UUID | str) -> Path:
    # Going through UUID refuses anything that is not an id, so a string like "../x" can never name a path.
    return workdir_root(data_dir) / str(uuid.UUID(str(session_id)))


def create_workdir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode goes through the umask and is ignored for an existing dir


def remove_workdir(path: Path) -> None:
    # rmtree unlinks links inside without following them; it refuses a top-level link, which we simply unlink.
    try:
        if path.is_symlink():
            path.unlink()
        else:
            shutil.rmtree(path)
    except FileNotFoundError:
        pass


def _is_within(path: str, root: str) -> bool:
    # commonpath compares whole components, so /data/ws10 is not taken for a child of /data/ws1.
    return os.path.commonpath([path, root]) == root


def resolve_inside(base: Path, candidate: str) -> Path | None:
    """The real path `candidate` names if it is `base` or lies inside it, else None (the file tools' guard)."""
    if "\x00" in candidate:
        return None
    root = os.path.realpath(base)
    # join keeps an absolute candidate as it is; "~" stays a literal name because nothing expands it.
    resolved = os.path.realpath(os.path.join(root, candidate))
    return Path(resolved) if _is_within(resolved, root) else None


def write_seed_files(root: Path, files: list[dict[str, str]]) -> None:
    """Place a template's seed files in a fresh working directory; a path that would leave it is skipped."""
    for seed in files:
        target = resolve_inside(root, seed["path"])
        if target is None or target == Path(os.path.realpath(root)):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(seed.get("content", ""), encoding="utf-8")


@dataclass(frozen=True)
class Entry:
    arcname: str
    kind: _Kind
    st: os.stat_result
    linkname: str
    name: str
    dir_fd: int  # the parent, open while this entry is being handled


def walk(root: Path) -> Iterator[Entry]:
    """Every dir, file and link below root, parents first. fwalk does not descend into links to directories."""
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted([*dirnames, *filenames]):
            try:
                st = os.lstat(name, dir_fd=dir_fd)
                kind = _KINDS.get(stat.S_IFMT(st.st_mode))
                linkname = os.readlink(name, dir_fd=dir_fd) if kind == "symlink" else ""
            except FileNotFoundError:
                continue  # removed since it was listed
            if kind is not None:
                arcname = name if rel == "." else f"{rel}/{name}"
                yield Entry(arcname, kind, st, linkname, name, dir_fd)


def _open_file(entry: Entry) -> IO[bytes] | None:
    # Opening relative to the parent's fd with O_NOFOLLOW means a file (or directory) replaced by a link since the
    # listing is not read through; O_NONBLOCK keeps a fifo swapped in from blocking the open.
    try:
        fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=entry.dir_fd)
    except OSError:
        return None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        return None
    return f


def _mode(st: os.stat_result) -> int:
    return stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)


def dir_stats(path: Path) -> tuple[int, int]:
    """(bytes in regular files, count of regular files and symlinks); links count as files of size 0."""
    total = count = 0
    for entry in walk(path):
        if entry.kind != "dir":
            total += entry.st.st_size if entry.kind == "file" else 0
            count += 1
    return total, count


def check_size(path: Path, max_bytes: int) -> tuple[int, int]:
    """dir_stats, raising WorkdirTooLarge over the cap; callers use it to refuse before a response starts."""
    total, count = dir_stats(path)
    if total > max_bytes:
        raise WorkdirTooLarge(total, max_bytes)
    return total, count


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.arcname)
    info.type = _TAR_TYPES[entry.kind]
    info.mode = _mode(entry.st)
    info.mtime = int(entry.st.st_mtime)
    info.uid, info.gid = entry.st.st_uid, entry.st.st_gid
    info.linkname = entry.linkname
    return info


def _write_tree(out: IO[bytes], root: Path, max_bytes: int, chunk_size: int = _CHUNK) -> int:
    """Write a gzip'd tar of root's contents to out; returns the number of files and links stored.

    Hard-linked files are stored as separate regular files: restore refuses hard-link members.
    """
    used = count = 0
    # In stream mode bufsize is the size of the pieces handed to out.write (the last ones may differ).
    with tarfile.open(fileobj=out, mode="w|gz", bufsize=chunk_size) as tar:
        for entry in walk(root):
            info = _tarinfo(entry)
            if entry.kind != "file":
                tar.addfile(info)
                count += entry.kind == "symlink"
                continue
            f = _open_file(entry)
            if f is None:
                continue
            with f:
                info.size = os.fstat(f.fileno()).st_size  # tar copies exactly this many bytes
                used += info.size  # re-checked here: the directory may grow after the up-front check
                if used > max_bytes:
                    raise WorkdirTooLarge(used, max_bytes)
                tar.addfile(info, f)
            count += 1
    return count


class _Stopped(Exception):
    """The consumer went away; the producer unwinds."""


class _QueueWriter:
    """tarfile's sink in the producer thread: hands each chunk of the gzip stream over a bounded queue."""

    def __init__(self, chunks: queue.Queue[object], stop: threading.Event) -> None:
        self._chunks, self._stop = chunks, stop

    def write(self, data: bytes) -> int:
        self.put(data)
        return len(data)

    def put(self, item: object) -> None:
        # A timed put re-checked against stop, so a consumer that left never strands this thread on a full queue.
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                pass
        raise _Stopped


def _produce(root: Path, max_bytes: int, chunk_size: int, sink: _QueueWriter) -> None:
    outcome: object = _DONE
    try:
        # tarfile's stream mode ("|") only ever calls write() on its file object, never seek or tell.
        _write_tree(cast("IO[bytes]", sink), root, max_bytes, chunk_size)
    except _Stopped:
        return
    except Exception as exc:  # handed over so the consumer re-raises it in its own task
        outcome = exc
    with contextlib.suppress(_Stopped):
        sink.put(outcome)


def _take(chunks: queue.Queue[object], stop: threading.Event) -> object:
    # Runs in an executor thread; polling stop keeps it from waiting forever once the generator was cancelled.
    while not stop.is_set():
        try:
            return chunks.get(timeout=_POLL_S)
        except queue.Empty:
            pass
    return _DONE


async def stream_tar_gz(path: Path, max_bytes: int, chunk_size: int = _CHUNK) -> AsyncIterator[bytes]:
    """A gzip'd tar of path's contents, built in a thread while it is sent, so memory stays flat."""
    await asyncio.to_thread(check_size, path, max_bytes)
    chunks: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_CHUNKS)
    stop = threading.Event()
    args = (path, max_bytes, chunk_size, _QueueWriter(chunks, stop))
    threading.Thread(target=_produce, args=args, name=PRODUCER_THREAD_NAME, daemon=True).start()
    try:
        while True:
            item = await asyncio.to_thread(_take, chunks, stop)
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            yield cast(bytes, item)
    finally:
        stop.set()  # on completion, error, aclose() or cancellation alike


def _copy_tree(src: Path, dst: Path, max_bytes: int) -> None:
    used, dir_modes = 0, []
    for entry in walk(src):
        target = dst / entry.arcname
        if entry.kind == "dir":
            os.mkdir(target, 0o700)
            dir_modes.append((target, _mode(entry.st)))
        elif entry.kind == "symlink":
            os.symlink(entry.linkname, target)
        elif (f := _open_file(entry)) is not None:
            with f, open(target, "xb") as out:
                while chunk := f.read(_CHUNK):
                    used += len(chunk)  # per chunk: the file may grow while we copy it
                    if used > max_bytes:
                        raise WorkdirTooLarge(used, max_bytes)
                    out.write(chunk)
            os.chmod(target, _mode(entry.st))
            os.utime(target, ns=(entry.st.st_atime_ns, entry.st.st_mtime_ns))
    # Deepest first and only now, as copytree does, so a read-only source dir does not block its own copy.
    for target, mode in reversed(dir_modes):
        os.chmod(target, mode)


def copy_workdir(src: Path, dst: Path, max_bytes: int) -> None:
    """copytree(symlinks=True) semantics for forks: links copied as links, special files skipped, size capped.

    The copy is built in a hidden staging directory beside dst and renamed into place once whole, so dst is either
    absent or complete: a crash mid-copy leaves only staging, which `sweep_staging` removes on the next start.
    """
    check_size(src, max_bytes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dst):
        raise FileExistsError(dst)  # like copytree
    staging = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.fork-"))  # mode 0700
    try:
        _copy_tree(src, staging, max_bytes)
        os.rename(staging, dst)
    except BaseException:
        remove_workdir(staging)
        raise


def sweep_staging(data_dir: Path) -> int:
    """Remove what a crash left half-built: fork copies and restores (hidden directories among the working
    directories) and archives being written (`.partial` files). Only for start-up, when nothing is being built."""
    removed = 0
    root = workdir_root(data_dir)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith("."):
                remove_workdir(entry)
                removed += 1
    archives = data_dir / "archives"
    if archives.is_dir():
        for entry in archives.glob(".*.partial"):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def create_archive(src: Path, dest: Path, max_bytes: int) -> ArchiveInfo:
    """Write a tar.gz of src's contents to dest, via a temp file so a crash never leaves half an archive there."""
    check_size(src, max_bytes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            count = _write_tree(out, src, max_bytes)
            out.flush()
            os.fsync(out.fileno())
        with open(tmp, "rb") as f:
            size, digest = os.fstat(f.fileno()).st_size, hashlib.file_digest(f, "sha256").hexdigest()
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ArchiveInfo(path=dest, size_bytes=size, file_count=count, sha256=digest)


def _safe_member(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """Extraction filter, run per member in archive order, so links extracted earlier are seen by later checks."""
    name = member.name
    if os.path.isabs(name) or ".." in PurePosixPath(name).parts:
        raise UnsafeArchive(f"member {name!r} leaves the destination")
    if not (member.isreg() or member.isdir() or member.issym()):
        raise UnsafeArchive(f"member {name!r} is a hard link or special file")
    root = os.path.realpath(dest_path)
    # Links may point anywhere (they are only links), but nothing may be written *through* one.
    if not _is_within(os.path.realpath(os.path.join(root, os.path.dirname(name))), root):
        raise UnsafeArchive(f"member {name!r} would be written through a link out of the destination")
    try:
        safe = tarfile.tar_filter(member, dest_path)  # also strips setuid/setgid and group/other write bits
    except tarfile.FilterError as exc:
        raise UnsafeArchive(str(exc)) from exc
    # Extracting as root would otherwise chown to whatever ids the archive names.
    return safe.replace(uid=os.getuid(), gid=os.getgid(), uname="", gname="", deep=False)


def _swap_in(staging: Path, dest: Path) -> None:
    if not os.path.lexists(dest):
        os.rename(staging, dest)
        return
    # The stdlib has no atomic directory exchange; the window without dest is two renames long.
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex}")
    os.rename(dest, old)
    try:
        os.rename(staging, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    remove_workdir(old)


MAX_ARCHIVE_MEMBERS = 200_000


def restore_archive(archive: Path, dest: Path, max_bytes: int) -> None:
    """Extract archive into dest, replacing what is there; an unsafe archive raises UnsafeArchive and changes nothing.

    What an archive unpacks to is counted from its headers before each member is written: past `max_bytes` of file
    content or `MAX_ARCHIVE_MEMBERS` entries (a decompression bomb, or an archive from a server with a larger limit)
    it stops there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.restore-"))  # mode 0700
    unpacked = members = 0

    def bounded(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        nonlocal unpacked, members
        members += 1
        unpacked += member.size if member.isreg() else 0
        if unpacked > max_bytes:
            raise UnsafeArchive(f"the archive unpacks to more than {max_bytes} bytes")
        if members > MAX_ARCHIVE_MEMBERS:
            raise UnsafeArchive(f"the archive holds more than {MAX_ARCHIVE_MEMBERS} entries")
        return _safe_member(member, dest_path)

    try:
        with tarfile.open(archive, mode="r:*") as tar:
            tar.extractall(staging, filter=bounded)  # noqa: S202 (the filter is the safety check)
    except BaseException:
        remove_workdir(staging)
        raise
    _swap_in(staging, dest)
