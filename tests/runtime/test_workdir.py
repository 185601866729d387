"""Working directories: the file-tool path guard, and tar streams, copies and archives that never follow a symlink out."""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import io
import os
import stat
import tarfile
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agent_api.runtime import workdir as wd
from agent_api.runtime.workdir import (
    PRODUCER_THREAD_NAME,
    UnsafeArchive,
    WorkdirTooLarge,
    copy_workdir,
    create_archive,
    create_workdir,
    dir_stats,
    remove_workdir,
    resolve_inside,
    restore_archive,
    session_workdir,
    stream_tar_gz,
)

MARKER = b"OUTSIDE-SECRET-" + uuid.uuid4().hex.encode()
BIG = 1 << 40


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workdir holding a file with a unique marker, which must never leak."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_bytes(MARKER)
    return d


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    d = tmp_path / "ws"
    d.mkdir()
    return d


def populate(root: Path, outside: Path) -> None:
    (root / "hello.txt").write_text("hello\n")
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "x.py").write_text("print('x')\n")
    (root / "sub" / "deeper" / "y.bin").write_bytes(bytes(range(256)) * 10)
    (root / "emptydir").mkdir()
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "secret-link").symlink_to(outside / "secret.txt")
    (root / "outdir-link").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "rel-link").symlink_to("../hello.txt")


def snapshot(root: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """relpath -> (kind, content or link target), never following links."""
    tree: dict[str, tuple[str, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                tree[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                tree[rel] = ("dir", None)
            else:
                tree[rel] = ("file", p.read_bytes())
    return tree


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


def read_tar(data: bytes) -> dict[str, tuple[str, bytes | str | None]]:
    tree: dict[str, tuple[str, bytes | str | None]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            if m.issym():
                tree[m.name] = ("link", m.linkname)
            elif m.isdir():
                tree[m.name] = ("dir", None)
            else:
                assert m.isreg(), m
                f = tar.extractfile(m)
                assert f is not None
                tree[m.name] = ("file", f.read())
    return tree


def producer_alive() -> bool:
    return any(t.name == PRODUCER_THREAD_NAME for t in threading.enumerate())


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll with a deadline; sleeping on the loop lets generator finalizers scheduled there run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


class TestLayout:
    def test_session_workdir_is_under_the_workdir_root(self, tmp_path: Path) -> None:
        sid = uuid.uuid4()
        assert session_workdir(tmp_path, sid) == tmp_path / "workdirs" / str(sid)
        assert session_workdir(tmp_path, str(sid).upper()) == tmp_path / "workdirs" / str(sid)

    def test_session_workdir_refuses_a_non_uuid(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError):
            session_workdir(tmp_path, "../../etc")

    def test_create_workdir_is_private_and_idempotent(self, tmp_path: Path) -> None:
        path = tmp_path / "a" / "b" / "ws"
        create_workdir(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        path.chmod(0o755)
        create_workdir(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o700

    def test_remove_workdir_does_not_follow_links_out(self, ws: Path, outside: Path) -> None:
        (ws / "f.txt").write_text("x")
        (ws / "out").symlink_to(outside, target_is_directory=True)
        (ws / "sub").mkdir()
        (ws / "sub" / "secret").symlink_to(outside / "secret.txt")
        remove_workdir(ws)
        assert not ws.exists()
        assert (outside / "secret.txt").read_bytes() == MARKER

    def test_remove_workdir_on_a_link_removes_only_the_link(self, tmp_path: Path, outside: Path) -> None:
        link = tmp_path / "ws-link"
        link.symlink_to(outside, target_is_directory=True)
        remove_workdir(link)
        assert not os.path.lexists(link)
        assert (outside / "secret.txt").read_bytes() == MARKER

    def test_remove_workdir_missing_is_fine(self, tmp_path: Path) -> None:
        remove_workdir(tmp_path / "never-created")


class TestResolveInside:
    @pytest.fixture
    def base(self, tmp_path: Path) -> Path:
        base = tmp_path / "ws1"
        (base / "sub").mkdir(parents=True)
        (base / "a.txt").write_text("a")
        return base

    def real(self, p: Path) -> Path:
        return Path(os.path.realpath(p))

    def test_file_inside(self, base: Path) -> None:
        assert resolve_inside(base, "a.txt") == self.real(base / "a.txt")
        assert resolve_inside(base, str(base / "a.txt")) == self.real(base / "a.txt")

    def test_relative_with_dotdot_that_stays_inside(self, base: Path) -> None:
        assert resolve_inside(base, "sub/../a.txt") == self.real(base / "a.txt")

    def test_dotdot_escape(self, base: Path) -> None:
        assert resolve_inside(base, "../outside.txt") is None
        assert resolve_inside(base, "sub/../../outside.txt") is None

    def test_absolute_path_elsewhere(self, base: Path) -> None:
        assert resolve_inside(base, "/etc/passwd") is None

    def test_symlink_escape(self, base: Path, outside: Path) -> None:
        (base / "link").symlink_to(outside, target_is_directory=True)
        (base / "sub" / "file-link").symlink_to(outside / "secret.txt")
        assert resolve_inside(base, "link") is None
        assert resolve_inside(base, "link/secret.txt") is None
        assert resolve_inside(base, "link/not-yet-there.txt") is None
        assert resolve_inside(base, "sub/file-link") is None

    def test_symlink_that_stays_inside(self, base: Path) -> None:
        (base / "sub" / "to-a").symlink_to("../a.txt")
        assert resolve_inside(base, "sub/to-a") == self.real(base / "a.txt")

    def test_prefix_trick(self, base: Path) -> None:
        sibling = base.parent / "ws10"
        sibling.mkdir()
        assert resolve_inside(base, str(sibling / "x.txt")) is None
        assert resolve_inside(base, "../ws10/x.txt") is None

    def test_the_base_itself(self, base: Path) -> None:
        for candidate in (".", "", str(base), "sub/.."):
            assert resolve_inside(base, candidate) == self.real(base), candidate

    def test_base_given_through_a_link(self, base: Path) -> None:
        link = base.parent / "base-link"
        link.symlink_to(base, target_is_directory=True)
        assert resolve_inside(link, "a.txt") == self.real(base / "a.txt")
        assert resolve_inside(link, "../outside") is None

    def test_nonexistent_file_inside_is_allowed(self, base: Path) -> None:
        assert resolve_inside(base, "new/dir/file.txt") == self.real(base) / "new" / "dir" / "file.txt"

    def test_tilde_is_literal(self, base: Path) -> None:
        assert resolve_inside(base, "~/x") == self.real(base) / "~" / "x"

    def test_nul_byte(self, base: Path) -> None:
        assert resolve_inside(base, "a.txt\x00") is None
        assert resolve_inside(base, "\x00/etc/passwd") is None


class TestDirStats:
    def test_counts_files_and_links_without_following(self, ws: Path, outside: Path) -> None:
        (ws / "a").write_bytes(b"x" * 10)
        (ws / "d").mkdir()
        (ws / "d" / "b").write_bytes(b"y" * 5)
        (ws / "big-link").symlink_to(outside, target_is_directory=True)
        (outside / "huge").write_bytes(b"z" * 100_000)
        os.mkfifo(ws / "fifo")
        assert dir_stats(ws) == (15, 3)

    def test_empty(self, ws: Path) -> None:
        assert dir_stats(ws) == (0, 0)


class TestStreamTarGz:
    async def test_contents_match_the_directory(self, ws: Path, outside: Path) -> None:
        populate(ws, outside)
        data = await collect(stream_tar_gz(ws, BIG))
        assert read_tar(data) == snapshot(ws)
        assert "sub/deeper/y.bin" in read_tar(data) and "emptydir" in read_tar(data)

    async def test_symlinks_travel_as_links_and_never_leak_the_target(self, ws: Path, outside: Path) -> None:
        populate(ws, outside)
        data = await collect(stream_tar_gz(ws, BIG))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            link = tar.getmember("secret-link")
            names = tar.getnames()
        assert link.type == tarfile.SYMTYPE
        assert link.linkname == str(outside / "secret.txt")
        assert not any(n.startswith("outdir-link/") for n in names)
        assert MARKER not in gzip.decompress(data)

    async def test_special_files_are_skipped(self, ws: Path) -> None:
        (ws / "a.txt").write_text("a")
        os.mkfifo(ws / "fifo")
        data = await asyncio.wait_for(collect(stream_tar_gz(ws, BIG)), 10)
        assert read_tar(data) == {"a.txt": ("file", b"a")}

    async def test_empty_dir(self, ws: Path) -> None:
        data = await collect(stream_tar_gz(ws, BIG))
        assert read_tar(data) == {}

    async def test_too_large_raises_before_yielding(self, ws: Path) -> None:
        (ws / "a.bin").write_bytes(b"x" * 1000)
        chunks = []
        with pytest.raises(WorkdirTooLarge):
            async for chunk in stream_tar_gz(ws, max_bytes=999):
                chunks.append(chunk)
        assert chunks == []
        assert not producer_alive()

    @pytest.mark.parametrize("kind", ["sparse-200MB", "random-32MB"])
    async def test_memory_stays_flat_for_a_large_file(self, kind: str, ws: Path) -> None:
        # The sparse file is read in full but compresses to almost nothing; the random one does not compress,
        # so it also shows the archive is never held whole.
        size = (200 if kind.startswith("sparse") else 32) * 1024 * 1024
        with open(ws / "big.bin", "wb") as f:
            if kind.startswith("sparse"):
                f.truncate(size)
            else:
                for _ in range(size >> 20):
                    f.write(os.urandom(1 << 20))
        unzip, header, total = zlib.decompressobj(wbits=31), b"", 0
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            async for chunk in stream_tar_gz(ws, BIG):
                # Decompress as it arrives, in bounded pieces, so the test itself holds nothing large.
                while chunk:
                    out = unzip.decompress(chunk, 1 << 20)
                    header, total, chunk = header or out[:512], total + len(out), unzip.unconsumed_tail
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        print(f"\npeak traced memory streaming {kind}: {peak / 2**20:.2f} MB")
        assert peak < 16 * 1024 * 1024
        member = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        assert (member.name, member.size) == ("big.bin", size)
        assert unzip.eof and total >= size + 512  # the whole file went through

    async def test_early_close_stops_the_producer(self, ws: Path) -> None:
        for i in range(8):
            (ws / f"rand{i}.bin").write_bytes(os.urandom(512 * 1024))
        stream = stream_tar_gz(ws, BIG, chunk_size=16 * 1024)
        assert isinstance(await stream.__anext__(), bytes)
        # Backpressure: while nobody reads, the producer waits on the full queue instead of running ahead.
        assert not await wait_until(lambda: not producer_alive(), timeout=0.5)
        await stream.aclose()  # type: ignore[attr-defined]
        assert await wait_until(lambda: not producer_alive())

    async def test_cancelled_consumer_stops_the_producer(self, ws: Path) -> None:
        for i in range(8):
            (ws / f"rand{i}.bin").write_bytes(os.urandom(512 * 1024))
        got_one = asyncio.Event()

        async def consume() -> None:  # like a streaming response whose client went away
            async for _ in stream_tar_gz(ws, BIG, chunk_size=16 * 1024):
                got_one.set()
                await asyncio.sleep(0.05)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_one.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        gc.collect()  # an abandoned generator is closed by the loop's finalizer hook once collected
        assert await wait_until(lambda: not producer_alive())


def swap_for_link_while_walking(monkeypatch: pytest.MonkeyPatch, ws: Path, outside: Path) -> None:
    """Replace ws/swap.txt by a link to the secret after the walk listed it as a regular file: the race an agent
    still running in the workdir could win against a download or fork."""
    (ws / "swap.txt").write_text("innocent")
    real_walk = wd.walk

    def racing_walk(root: Path) -> Iterator[wd.Entry]:
        for entry in real_walk(root):
            if entry.arcname == "swap.txt":
                (ws / "swap.txt").unlink()
                (ws / "swap.txt").symlink_to(outside / "secret.txt")
            yield entry

    monkeypatch.setattr(wd, "walk", racing_walk)
    monkeypatch.setattr(wd, "check_size", lambda path, max_bytes: (0, 0))  # so the racing walk is the reading one


class TestSymlinkRaces:
    async def test_stream_does_not_read_a_file_swapped_for_a_link(
        self, ws: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        swap_for_link_while_walking(monkeypatch, ws, outside)
        data = await collect(stream_tar_gz(ws, BIG))
        assert MARKER not in gzip.decompress(data)
        assert "swap.txt" not in read_tar(data)

    def test_copy_does_not_read_a_file_swapped_for_a_link(
        self, ws: Path, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        swap_for_link_while_walking(monkeypatch, ws, outside)
        copy_workdir(ws, tmp_path / "fork", BIG)
        assert not os.path.lexists(tmp_path / "fork" / "swap.txt")


class TestCopyWorkdir:
    def test_copies_files_and_links_as_links(self, ws: Path, outside: Path, tmp_path: Path) -> None:
        populate(ws, outside)
        dst = tmp_path / "fork" / "ws"
        copy_workdir(ws, dst, BIG)
        assert snapshot(dst) == snapshot(ws)
        assert os.path.islink(dst / "secret-link")
        assert os.readlink(dst / "secret-link") == os.readlink(ws / "secret-link")
        assert os.path.islink(dst / "outdir-link")
        assert stat.S_IMODE((dst / "run.sh").stat().st_mode) == 0o755

    def test_the_copy_is_independent(self, ws: Path, outside: Path, tmp_path: Path) -> None:
        populate(ws, outside)
        before = snapshot(ws)
        dst = tmp_path / "fork"
        copy_workdir(ws, dst, BIG)
        (dst / "hello.txt").write_text("changed")
        (dst / "sub" / "x.py").unlink()
        (dst / "new.txt").write_text("new")
        assert snapshot(ws) == before
        assert (outside / "secret.txt").read_bytes() == MARKER

    def test_special_files_are_skipped(self, ws: Path, tmp_path: Path) -> None:
        (ws / "a.txt").write_text("a")
        os.mkfifo(ws / "fifo")
        copy_workdir(ws, tmp_path / "fork", BIG)
        assert snapshot(tmp_path / "fork") == {"a.txt": ("file", b"a")}

    def test_too_large(self, ws: Path, tmp_path: Path) -> None:
        (ws / "a.bin").write_bytes(b"x" * 1000)
        with pytest.raises(WorkdirTooLarge):
            copy_workdir(ws, tmp_path / "fork", max_bytes=999)
        assert not (tmp_path / "fork").exists()

    def test_growth_after_the_check_is_still_capped(
        self, ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (ws / "a.bin").write_bytes(b"x" * 1000)
        monkeypatch.setattr(wd, "check_size", lambda path, max_bytes: (0, 0))  # as if it grew after the check
        with pytest.raises(WorkdirTooLarge):
            copy_workdir(ws, tmp_path / "fork", max_bytes=999)
        assert not (tmp_path / "fork").exists()

    def test_existing_destination_is_refused(self, ws: Path, tmp_path: Path) -> None:
        (tmp_path / "fork").mkdir()
        with pytest.raises(FileExistsError):
            copy_workdir(ws, tmp_path / "fork", BIG)


def make_tar(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


class TestArchives:
    def test_round_trip(self, ws: Path, outside: Path, tmp_path: Path) -> None:
        populate(ws, outside)
        os.link(ws / "hello.txt", ws / "hard.txt")  # stored as a plain file, so restore accepts it
        archives = tmp_path / "archives"
        info = create_archive(ws, archives / "snap.tar.gz", BIG)
        assert info.path == archives / "snap.tar.gz"
        assert info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()
        assert info.size_bytes == info.path.stat().st_size
        assert info.file_count == 9  # 5 regular files (one a hard link) + 4 symlinks
        assert sorted(os.listdir(archives)) == ["snap.tar.gz"]  # no temp file left
        assert MARKER not in gzip.decompress(info.path.read_bytes())
        dest = tmp_path / "restored"
        restore_archive(info.path, dest, 10**9)
        assert snapshot(dest) == snapshot(ws)
        assert stat.S_IMODE(dest.stat().st_mode) == 0o700
        assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755

    def test_restore_replaces_existing_contents(self, ws: Path, tmp_path: Path) -> None:
        (ws / "new.txt").write_text("new")
        info = create_archive(ws, tmp_path / "snap.tar.gz", BIG)
        dest = tmp_path / "dest"
        dest.mkdir()
        (dest / "stale.txt").write_text("stale")
        (dest / "new.txt").write_text("old")
        restore_archive(info.path, dest, 10**9)
        assert snapshot(dest) == {"new.txt": ("file", b"new")}
        assert sorted(os.listdir(tmp_path)) == ["dest", "snap.tar.gz", "ws"]  # no staging or old dir left

    def test_too_large(self, ws: Path, tmp_path: Path) -> None:
        (ws / "a.bin").write_bytes(b"x" * 1000)
        with pytest.raises(WorkdirTooLarge):
            create_archive(ws, tmp_path / "archives" / "snap.tar.gz", max_bytes=999)
        assert not (tmp_path / "archives" / "snap.tar.gz").exists()

    def test_failure_while_writing_leaves_no_partial_archive(
        self, ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (ws / "a.bin").write_bytes(b"x" * 1000)
        monkeypatch.setattr(wd, "check_size", lambda path, max_bytes: (0, 0))  # as if it grew after the check
        archives = tmp_path / "archives"
        archives.mkdir()
        with pytest.raises(WorkdirTooLarge):
            create_archive(ws, archives / "snap.tar.gz", max_bytes=999)
        assert os.listdir(archives) == []

    def test_a_decompression_bomb_stops_at_the_byte_limit(self, tmp_path: Path) -> None:
        zeros = b"\0" * (20 * 1024 * 1024)  # about 20 kB once compressed
        archive = make_tar(tmp_path / "bomb.tar.gz", (member("small.txt"), b"ok"), (member("zeros.bin"), zeros))
        assert archive.stat().st_size < 100_000
        dest = tmp_path / "dest"
        dest.mkdir()
        (dest / "keep.txt").write_text("keep")
        with pytest.raises(UnsafeArchive, match="more than 1048576 bytes"):
            restore_archive(archive, dest, 1024 * 1024)
        assert snapshot(dest) == {"keep.txt": ("file", b"keep")}
        assert sorted(os.listdir(tmp_path)) == ["bomb.tar.gz", "dest"]  # no staging directory left behind
        restore_archive(archive, dest, 21 * 1024 * 1024)  # the same archive within a limit that holds it
        assert (dest / "zeros.bin").stat().st_size == len(zeros)

    def test_too_many_entries_are_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(wd, "MAX_ARCHIVE_MEMBERS", 10)
        archive = make_tar(tmp_path / "many.tar.gz", *((member(f"f{i}"), b"") for i in range(11)))
        with pytest.raises(UnsafeArchive, match="more than 10 entries"):
            restore_archive(archive, tmp_path / "dest", 10**9)
        assert not (tmp_path / "dest").exists()

    def test_setuid_bits_are_stripped(self, tmp_path: Path) -> None:
        archive = make_tar(tmp_path / "a.tar.gz", (member("tool", mode=0o6755), b"#!/bin/sh\n"))
        restore_archive(archive, tmp_path / "dest", 10**9)
        assert stat.S_IMODE((tmp_path / "dest" / "tool").stat().st_mode) == 0o755

    @pytest.mark.parametrize(
        "case", ["dotdot", "nested-dotdot", "absolute", "hardlink", "through-link", "over-link", "fifo"]
    )
    def test_malicious_archive_is_refused(self, case: str, tmp_path: Path, outside: Path) -> None:
        target = str(outside / "secret.txt")
        cases: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
            "dotdot": [(member("../escape.txt"), b"evil")],
            "nested-dotdot": [(member("sub"), None), (member("sub/../../escape.txt"), b"evil")],
            "absolute": [(member(str(outside / "abs.txt")), b"evil")],
            "hardlink": [(member("hard", tarfile.LNKTYPE, linkname=target), None)],
            "through-link": [
                (member("link", tarfile.SYMTYPE, linkname=str(outside)), None),
                (member("link/evil.txt"), b"evil"),
            ],
            "over-link": [(member("x", tarfile.SYMTYPE, linkname=target), None), (member("x"), b"evil")],
            "fifo": [(member("fifo", tarfile.FIFOTYPE), None)],
        }
        archive = make_tar(tmp_path / "evil.tar.gz", *cases[case])
        dest = tmp_path / "dest"
        dest.mkdir()
        (dest / "keep.txt").write_text("keep")
        outside_before = snapshot(outside)
        with pytest.raises(UnsafeArchive):
            restore_archive(archive, dest, 10**9)
        assert snapshot(outside) == outside_before
        assert not (tmp_path / "escape.txt").exists()
        assert snapshot(dest) == {"keep.txt": ("file", b"keep")}
        assert sorted(os.listdir(tmp_path)) == ["dest", "evil.tar.gz", "outside"]
