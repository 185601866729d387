"""The working directory's files: listing, content (text, binary, size cap), and every way out of the directory
(`..`, absolute paths, symlinks at any component, a symlink swapped in while the request runs) answering 4xx."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api.config import Settings
from agent_api.models import User
from agent_api.runtime import workdir_files
from agent_api.sessions import service as sessions_service
from agent_api.sessions.schemas import SessionCreate
from tests.conftest import UserAccount, Users, app_state, assert_error_shape

SESSIONS = "/api/v1/sessions"
SECRET = b"SECRET-OUTSIDE-THE-WORKDIR"


async def new_session(app: object, owner: UserAccount) -> tuple[str, Path]:
    """A session made through the sessions service (no agent process starts), and its working directory."""
    state = app_state(app)
    async with state.db.transaction() as db:
        user = await db.get(User, uuid.UUID(owner.id))
        created = await sessions_service.create_session(db, state, user, SessionCreate(name="files"))
    return str(created.session.id), sessions_service.workdir_of(state, created.session.id)


class Files:
    def __init__(self, client: httpx.AsyncClient, user: UserAccount, session_id: str) -> None:
        self.client, self.user, self.session_id = client, user, session_id

    async def list(self, path: str | None = None, **kw: Any) -> httpx.Response:
        params = {} if path is None else {"path": path}
        return await self.client.get(
            f"{SESSIONS}/{self.session_id}/files", params=params, headers=self.user.headers, **kw
        )

    async def content(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(
            f"{SESSIONS}/{self.session_id}/files/content", params={"path": path}, headers=self.user.headers, **kw
        )


@pytest.fixture
async def session(app: object, owner: UserAccount) -> tuple[str, Path]:
    return await new_session(app, owner)


@pytest.fixture
def files(client: httpx.AsyncClient, owner: UserAccount, session: tuple[str, Path]) -> Files:
    return Files(client, owner, session[0])


@pytest.fixture
def root(session: tuple[str, Path]) -> Path:
    return session[1]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the working directory, holding a secret nothing may serve."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "f.txt").write_bytes(SECRET)
    return tmp_path


class TestUnauthenticated:
    async def test_both_routes_need_a_credential(self, client: httpx.AsyncClient, session: tuple[str, Path]) -> None:
        for suffix in ("/files", "/files/content?path=a.txt"):
            assert_error_shape(await client.get(f"{SESSIONS}/{session[0]}{suffix}"), 401)

    async def test_a_bad_token_is_401(self, client: httpx.AsyncClient, session: tuple[str, Path]) -> None:
        headers = {"Authorization": "Bearer nope"}
        assert_error_shape(await client.get(f"{SESSIONS}/{session[0]}/files", headers=headers), 401)


class TestListing:
    async def test_root_lists_dirs_first_then_by_name(self, files: Files, root: Path) -> None:
        (root / "b.txt").write_text("bee")
        (root / "A.md").write_text("# a")
        (root / "zdir").mkdir()
        (root / "adir").mkdir()
        (root / "adir" / "inner.txt").write_text("x")
        r = await files.list()
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["path"] == "" and body["truncated"] is False
        assert [(e["name"], e["type"]) for e in body["entries"]] == [
            ("adir", "dir"),
            ("zdir", "dir"),
            ("A.md", "file"),
            ("b.txt", "file"),
        ]
        bee = body["entries"][3]
        assert bee == {"name": "b.txt", "path": "b.txt", "type": "file", "size": 3, "modified_at": bee["modified_at"]}
        modified = datetime.fromisoformat(bee["modified_at"])
        assert modified.utcoffset() == timedelta(0)
        assert abs(modified.timestamp() - (root / "b.txt").stat().st_mtime) < 1

    async def test_missing_path_and_empty_path_and_dot_are_the_root(self, files: Files, root: Path) -> None:
        (root / "only.txt").write_text("1")
        for path in (None, "", ".", "./"):
            r = await files.list(path)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["path"] == ""
            assert [e["path"] for e in r.json()["entries"]] == ["only.txt"]

    async def test_a_subdirectory_by_any_spelling(self, files: Files, root: Path) -> None:
        (root / "src" / "pkg").mkdir(parents=True)
        (root / "src" / "pkg" / "mod.py").write_text("print(1)\n")
        for path in ("src/pkg", "src/pkg/", "./src//pkg", "src/./pkg"):
            r = await files.list(path)
            assert r.status_code == 200, (path, r.text)
            body = r.json()
            assert body["path"] == "src/pkg"
            assert [(e["name"], e["path"]) for e in body["entries"]] == [("mod.py", "src/pkg/mod.py")]

    async def test_a_symlink_is_listed_as_one_and_never_followed(self, files: Files, root: Path, outside: Path) -> None:
        os.symlink(outside, root / "out")
        os.symlink(outside / "secret.txt", root / "secret-link")
        os.symlink("nowhere", root / "dangling")
        body = (await files.list()).json()
        links = {e["name"]: e for e in body["entries"]}
        assert {n: e["type"] for n, e in links.items()} == {
            "dangling": "symlink",
            "out": "symlink",
            "secret-link": "symlink",
        }
        # The link's own size (the length of its target), not the target's.
        assert links["secret-link"]["size"] == len(str(outside / "secret.txt"))
        assert links["dangling"]["size"] == len("nowhere")
        for path in ("out", "out/", "out/secret.txt", "dangling"):
            assert_error_shape(await files.list(path), 404, "file_not_found")

    async def test_many_entries_are_capped_and_marked_truncated(self, files: Files, root: Path) -> None:
        (root / "many").mkdir()
        for n in range(workdir_files.MAX_LIST_ENTRIES + 5):
            (root / "many" / f"f{n:05d}").touch()
        (root / "many" / "zz-dir").mkdir()
        body = (await files.list("many")).json()
        assert body["truncated"] is True
        assert len(body["entries"]) == workdir_files.MAX_LIST_ENTRIES
        # Sorted before the cut: the directory (last by name) comes first, then the files in order.
        assert body["entries"][0]["name"] == "zz-dir"
        assert [e["name"] for e in body["entries"][1:4]] == ["f00000", "f00001", "f00002"]

    def test_exactly_the_cap_is_not_truncated(self, root: Path) -> None:
        for n in range(5):
            (root / f"f{n}").touch()
        listing = workdir_files.list_dir(root, "", limit=5)
        assert listing.truncated is False and len(listing.entries) == 5
        listing = workdir_files.list_dir(root, "", limit=4)
        assert listing.truncated is True and [e.name for e in listing.entries] == ["f0", "f1", "f2", "f3"]

    async def test_special_files_are_left_out(self, files: Files, root: Path) -> None:
        os.mkfifo(root / "pipe")
        (root / "plain.txt").write_text("p")
        body = (await files.list()).json()
        assert [e["name"] for e in body["entries"]] == ["plain.txt"]
        assert body["truncated"] is False

    async def test_a_name_that_is_not_utf8_is_listed_without_a_500(self, files: Files, root: Path) -> None:
        os.close(os.open(os.fsencode(root) + b"/bad-\xff-name", os.O_CREAT | os.O_WRONLY, 0o600))
        r = await files.list()
        assert r.status_code == 200, r.text
        assert [e["name"] for e in r.json()["entries"]] == ["bad-\ufffd-name"]

    async def test_a_file_is_not_a_directory(self, files: Files, root: Path) -> None:
        (root / "f.txt").write_text("x")
        assert_error_shape(await files.list("f.txt"), 400, "not_a_directory")
        # A file further up the path means the path does not exist.
        assert_error_shape(await files.list("f.txt/f.txt"), 404, "file_not_found")

    async def test_missing_is_404(self, files: Files) -> None:
        assert_error_shape(await files.list("no/such/dir"), 404, "file_not_found")

    async def test_a_missing_working_directory_is_404(self, files: Files, root: Path) -> None:
        root.rmdir()
        assert_error_shape(await files.list(), 404, "workdir_not_found")
        assert_error_shape(await files.content("x"), 404, "workdir_not_found")


class TestContent:
    async def test_text_is_text_plain_utf8(self, files: Files, root: Path) -> None:
        text = "héllo <script>alert(1)</script>\n"
        (root / "notes.md").write_text(text, encoding="utf-8")
        r = await files.content("notes.md")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"]
        assert "content-disposition" not in r.headers
        assert r.content == text.encode()

    async def test_an_empty_file_is_empty_text(self, files: Files, root: Path) -> None:
        (root / "empty").touch()
        r = await files.content("empty")
        assert r.status_code == 200 and r.content == b""
        assert r.headers["content-type"] == "text/plain; charset=utf-8"

    @pytest.mark.parametrize("data", [b"PK\x03\x04\x00\x00binary", b"caf\xe9 latin-1", b"nul \x00 inside text"])
    async def test_binary_is_an_octet_stream_attachment(self, files: Files, root: Path, data: bytes) -> None:
        (root / "blob.bin").write_bytes(data)
        r = await files.content("blob.bin")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-disposition"] == 'attachment; filename="blob.bin"'
        assert r.content == data

    async def test_an_awkward_name_cannot_break_the_disposition_header(self, files: Files, root: Path) -> None:
        name = 'we"ird\\näme;.bin'
        (root / name).write_bytes(b"\x00\x01")
        r = await files.content(name)
        assert r.status_code == 200, r.text
        disposition = r.headers["content-disposition"]
        assert disposition.startswith("attachment; filename=\"we_ird_n_me;.bin\"; filename*=UTF-8''")
        assert disposition.endswith("we%22ird%5Cn%C3%A4me%3B.bin")

    async def test_a_file_in_a_subdirectory(self, files: Files, root: Path) -> None:
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "b" / "c.txt").write_text("deep")
        for path in ("a/b/c.txt", "./a//b/c.txt"):
            assert (await files.content(path)).text == "deep"

    async def test_over_the_cap_is_413_and_at_the_cap_is_served(
        self, app: object, files: Files, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(app_state(app).settings, "max_file_view_bytes", 10)
        (root / "ten.txt").write_bytes(b"x" * 10)
        (root / "eleven.txt").write_bytes(b"x" * 11)
        assert (await files.content("ten.txt")).content == b"x" * 10
        body = assert_error_shape(await files.content("eleven.txt"), 413, "file_too_large")
        assert body["error"]["details"] == {"max_bytes": 10}  # type: ignore[index]

    async def test_the_default_cap_is_one_mebibyte(self, files: Files, root: Path) -> None:
        assert Settings().max_file_view_bytes == 1024 * 1024
        (root / "big.bin").write_bytes(b"\x00" * (1024 * 1024 + 1))
        assert_error_shape(await files.content("big.bin"), 413, "file_too_large")

    async def test_a_file_that_grows_while_read_is_still_capped(self, root: Path) -> None:
        (root / "grows").write_bytes(b"abc")

        class OsThatGrowsTheFile:
            """`os` for the reader, whose `fstat` reports the size before the file grows past the cap."""

            def __getattr__(self, name: str) -> Any:
                return getattr(os, name)

            @staticmethod
            def fstat(fd: int) -> os.stat_result:
                st = os.fstat(fd)
                with open(root / "grows", "ab") as f:
                    f.write(b"x" * 100)
                return st

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(workdir_files, "os", OsThatGrowsTheFile())
            with pytest.raises(workdir_files.FileTooLarge):
                workdir_files.read_file(root, "grows", 50)
        assert workdir_files.read_file(root, "grows", 200).data == b"abc" + b"x" * 100

    async def test_a_directory_is_400(self, files: Files, root: Path) -> None:
        (root / "d").mkdir()
        for path in ("d", "d/", "", "."):
            assert_error_shape(await files.content(path), 400, "is_a_directory")

    async def test_a_fifo_is_404_and_does_not_hang(self, files: Files, root: Path) -> None:
        os.mkfifo(root / "pipe")
        assert_error_shape(await files.content("pipe", timeout=10), 404, "file_not_found")

    async def test_missing_is_404(self, files: Files) -> None:
        assert_error_shape(await files.content("nope.txt"), 404, "file_not_found")


class TestOutside:
    @pytest.mark.parametrize(
        "path",
        [
            "../secret.txt",
            "../../etc/passwd",
            "/etc/passwd",
            "//etc/passwd",
            "a/../../secret.txt",
            "a/../f.txt",  # stays inside, but `..` is never interpreted
            "..",
        ],
    )
    async def test_dot_dot_and_absolute_paths_are_404(self, files: Files, root: Path, path: str) -> None:
        (root / "a").mkdir()
        (root / "f.txt").write_text("inside")
        (root.parent / "secret.txt").write_bytes(SECRET)
        try:
            for r in (await files.content(path), await files.list(path)):
                assert_error_shape(r, 404, "file_not_found")
                assert SECRET not in r.content
        finally:
            (root.parent / "secret.txt").unlink()

    async def test_a_symlink_at_the_last_component_is_404(self, files: Files, root: Path, outside: Path) -> None:
        (root / "real.txt").write_text("inside")
        os.symlink(outside / "secret.txt", root / "abs-link")
        os.symlink("../" * 12 + str(outside / "secret.txt").lstrip("/"), root / "rel-link")
        os.symlink("real.txt", root / "inside-link")  # even one that stays inside: links are never followed
        for name in ("abs-link", "rel-link", "inside-link"):
            r = await files.content(name)
            assert_error_shape(r, 404, "file_not_found")

    async def test_a_symlink_at_any_earlier_component_is_404(self, files: Files, root: Path, outside: Path) -> None:
        (root / "real").mkdir()
        (root / "real" / "f.txt").write_text("inside")
        os.symlink(outside, root / "out")
        os.symlink("real", root / "alias")
        (root / "nest").mkdir()
        os.symlink(outside, root / "nest" / "out")
        for path in ("out/f.txt", "out/secret.txt", "alias/f.txt", "nest/out/secret.txt"):
            assert_error_shape(await files.content(path), 404, "file_not_found")
            assert_error_shape(await files.list(path.rsplit("/", 1)[0]), 404, "file_not_found")

    async def test_another_users_session_is_404(self, client: httpx.AsyncClient, users: Users, files: Files) -> None:
        other = await users.create()
        intruder = Files(client, other, files.session_id)
        assert_error_shape(await intruder.list(), 404, "session_not_found")
        assert_error_shape(await intruder.content("x.txt"), 404, "session_not_found")
        assert_error_shape(await Files(client, files.user, str(uuid.uuid4())).list(), 404, "session_not_found")


class TestHostilePaths:
    async def test_nul_is_400(self, files: Files) -> None:
        for url in ("files?path=a%00b", "files/content?path=a%00.txt"):
            r = await files.client.get(f"{SESSIONS}/{files.session_id}/{url}", headers=files.user.headers)
            assert_error_shape(r, 400, "invalid_characters")

    async def test_percent_encoded_dot_dot_is_decoded_once_and_refused(self, files: Files) -> None:
        for url in ("files?path=%2e%2e/secret.txt", "files/content?path=%2E%2E%2Fsecret.txt"):
            r = await files.client.get(f"{SESSIONS}/{files.session_id}/{url}", headers=files.user.headers)
            assert_error_shape(r, 404, "file_not_found")
        # Encoded twice, it is a name like any other, and there is no such file.
        assert_error_shape(await files.content("%2e%2e/secret.txt"), 404, "file_not_found")

    async def test_a_very_long_path_is_422(self, files: Files) -> None:
        long = "a/" * 3000
        assert_error_shape(await files.content(long), 422, "validation_error")
        assert_error_shape(await files.list(long), 422, "validation_error")

    @pytest.mark.parametrize(
        "path",
        ["x" * 300, "a/" + "y" * 256 + "/b", "..\\..\\secret.txt", "~/secret.txt", "~root", "\u202e.txt", " ", "\\"],
    )
    async def test_odd_names_are_plain_404s(self, files: Files, path: str) -> None:
        assert_error_shape(await files.content(path), 404, "file_not_found")
        assert_error_shape(await files.list(path), 404, "file_not_found")

    def test_the_normalizer_refuses_what_it_must(self) -> None:
        for bad in ("/a", "..", "a/..", "a/../b", "a\x00b", "x" * (workdir_files.MAX_PATH_CHARS + 1)):
            with pytest.raises(workdir_files.FileNotInWorkdir):
                workdir_files.normalize(bad)
        assert workdir_files.normalize("./a//b/./c/") == ["a", "b", "c"]
        assert workdir_files.normalize("..a/b..") == ["..a", "b.."]


@pytest.fixture
def swapper() -> Iterator[Callable[[Callable[[], None], Callable[[], None]], None]]:
    """Runs two steps in a loop on a thread (put the link in, take it out) until the test ends."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(link_in: Callable[[], None], link_out: Callable[[], None]) -> None:
        def loop() -> None:
            while not stop.is_set():
                link_in()
                link_out()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


class TestSymlinkSwapRace:
    """The agent swaps a directory (or the file itself) for a link to a secret while the server reads: whatever
    moment the swap lands, the answer is the real file or a 404, never the secret."""

    ROUNDS = 3000

    @staticmethod
    def _swap_dir(root: Path, outside: Path) -> tuple[Callable[[], None], Callable[[], None]]:
        (root / "d").mkdir()
        (root / "d" / "f.txt").write_bytes(b"inside")

        def link_in() -> None:
            os.rename(root / "d", root / "d.real")
            os.symlink(outside, root / "d")

        def link_out() -> None:
            os.unlink(root / "d")
            os.rename(root / "d.real", root / "d")

        return link_in, link_out

    @staticmethod
    def _swap_file(root: Path, outside: Path) -> tuple[Callable[[], None], Callable[[], None]]:
        (root / "f.txt").write_bytes(b"inside")

        def link_in() -> None:
            os.symlink(outside / "secret.txt", root / "f.tmp")
            os.replace(root / "f.tmp", root / "f.txt")  # atomic: f.txt is always there, file or link

        def link_out() -> None:
            (root / "f.new").write_bytes(b"inside")
            os.replace(root / "f.new", root / "f.txt")

        return link_in, link_out

    def _read_many(self, root: Path, path: str) -> dict[str, int]:
        seen = {"inside": 0, "refused": 0}
        for _ in range(self.ROUNDS):
            try:
                data = workdir_files.read_file(root, path, 1024).data
            except workdir_files.FileNotInWorkdir:
                seen["refused"] += 1
                continue
            assert data != SECRET, "read through a symlink swapped in during the read"
            assert data == b"inside"
            seen["inside"] += 1
        return seen

    def test_a_directory_swapped_for_a_link_is_never_read_through(
        self, root: Path, outside: Path, swapper: Any
    ) -> None:
        swapper(*self._swap_dir(root, outside))
        seen = self._read_many(root, "d/f.txt")
        assert seen["inside"] + seen["refused"] == self.ROUNDS

    def test_a_file_swapped_for_a_link_is_never_read_through(self, root: Path, outside: Path, swapper: Any) -> None:
        swapper(*self._swap_file(root, outside))
        seen = self._read_many(root, "f.txt")
        assert seen["inside"] + seen["refused"] == self.ROUNDS

    def test_a_listing_never_shows_the_links_target(self, root: Path, outside: Path, swapper: Any) -> None:
        swapper(*self._swap_dir(root, outside))
        for _ in range(self.ROUNDS // 3):
            try:
                names = [e.name for e in workdir_files.list_dir(root, "d").entries]
            except workdir_files.FileNotInWorkdir:
                continue
            assert names == ["f.txt"] or names == [], names
            assert "secret.txt" not in names

    async def test_through_the_api(self, files: Files, root: Path, outside: Path, swapper: Any) -> None:
        swapper(*self._swap_dir(root, outside))
        statuses = set()
        for _ in range(150):
            r = await files.content("d/f.txt")
            assert SECRET not in r.content
            assert r.status_code in (200, 404), r.text
            if r.status_code == 200:
                assert r.content == b"inside"
            statuses.add(r.status_code)
        assert statuses <= {200, 404}
