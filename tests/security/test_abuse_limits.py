"""One user trying to exhaust the service: oversized pages, bodies and prompts, JSON nested to blow the stack,
password guessing, query floods, every agent slot, every stream. Each limit answers a clear 4xx (429 with
`Retry-After` for the ones that pass with time) and changes nothing; other users keep being served."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from agent_api import json_input
from agent_api.agent_settings import MAX_MESSAGE_CHARS
from agent_api.app import create_app
from agent_api.sessions import service as sessions_service
from tests.conftest import (
    SessionsApi,
    UserAccount,
    Users,
    app_state,
    assert_error_shape,
    make_client,
    make_settings,
    wait_until,
)
from tests.streaming import conftest as streaming
from tests.streaming.conftest import Stream, close_code, connect

server_url = streaming.server_url  # a real uvicorn around this module's app

PER_USER_AGENTS = 2
PER_USER_STREAMS = 2
BODY_LIMIT = 256 * 1024  # above the longest prompt, so the prompt's own limit is what answers
LOGIN_PER_USER = 3
LOGIN_PER_ADDRESS = 8


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        database_url,
        max_live_sessions=10,
        max_live_sessions_per_user=PER_USER_AGENTS,
        max_streams_per_user=PER_USER_STREAMS,
        max_body_bytes=BODY_LIMIT,
        login_max_failures_per_user=LOGIN_PER_USER,
        login_max_failures_per_ip=LOGIN_PER_ADDRESS,
        spare_agents=0,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


async def session_count(client: httpx.AsyncClient, user: UserAccount) -> int:
    r = await client.get("/api/v1/sessions", headers=user.headers)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


class TestSizes:
    LISTS = ["/api/v1/sessions", "/api/v1/tasks", "/api/v1/session-templates", "/api/v1/reports", "/api/v1/webhooks"]

    @pytest.mark.parametrize("path", LISTS)
    @pytest.mark.parametrize("params", [{"page_size": 101}, {"page_size": 0}, {"page": 0}, {"page_size": 10**12}])
    async def test_page_bounds_are_422(
        self, client: httpx.AsyncClient, owner: UserAccount, path: str, params: dict[str, int]
    ) -> None:
        assert_error_shape(await client.get(path, params=params, headers=owner.headers), 422)

    async def test_the_largest_page_is_served(self, client: httpx.AsyncClient, owner: UserAccount) -> None:
        r = await client.get("/api/v1/sessions", params={"page_size": 100}, headers=owner.headers)
        assert r.status_code == 200 and r.json()["page_size"] == 100

    async def test_a_body_over_the_limit_is_413_and_stores_nothing(
        self, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        before = await session_count(client, owner)
        body = {"name": "big", "description": "x" * (BODY_LIMIT + 1)}
        assert_error_shape(await client.post("/api/v1/sessions", json=body, headers=owner.headers), 413)
        assert await session_count(client, owner) == before

    async def test_a_prompt_over_the_limit_is_422_and_sends_nothing(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(name="long prompt")
        r = await sessions.query(s["id"], "x" * (MAX_MESSAGE_CHARS + 1), wait=False)
        assert_error_shape(r, 422)
        after = await sessions.get(s["id"])
        # The agent's warm-up, started by the create, may have moved the status to "connecting"; no turn started.
        assert after["status"] in ("created", "connecting", "active")
        assert (after["message_count"], after["turn_count"]) == (0, 0)


class TestNesting:
    """Python's JSON decoder recurses per level: before the limit, a 200 kB body of brackets was a 500."""

    @pytest.mark.parametrize("depth", [65, 5_000, 100_000])
    @pytest.mark.parametrize(
        ("path", "prefix", "suffix"),
        [
            ("/api/v1/auth/login", '{"username": ', ', "password": "x"}'),
            ("/api/v1/sessions", '{"name": "n", "metadata": {"a": ', "}}"),
            ("/api/v1/mcp-servers/import", '{"mcpServers": {"a": ', "}}"),
        ],
    )
    async def test_deep_bodies_are_422(
        self, client: httpx.AsyncClient, owner: UserAccount, depth: int, path: str, prefix: str, suffix: str
    ) -> None:
        before = await session_count(client, owner)
        content = prefix + nested(depth) + suffix
        for headers in ({"content-type": "application/json"}, {}):  # FastAPI reads an untyped body as JSON too
            r = await client.post(path, content=content, headers={**owner.headers, **headers})
            assert_error_shape(r, 422, "too_deeply_nested")
        assert await session_count(client, owner) == before

    @pytest.mark.parametrize(
        "headers",
        [
            [("content-type", "application/JSON")],  # FastAPI reads any case as JSON
            [("content-type", "application/json"), ("content-type", "text/plain")],
            [("content-type", "text/plain"), ("content-type", "application/json")],
        ],
        ids=["upper-case", "json-first", "json-second"],
    )
    async def test_content_type_tricks_do_not_skip_the_check(
        self, app: object, owner: UserAccount, headers: list[tuple[str, str]]
    ) -> None:
        content = '{"name": "n", "metadata": {"a": ' + nested(5_000) + "}}"
        async with make_client(app) as c:
            r = await c.post(
                "/api/v1/sessions",
                content=content,
                headers=httpx.Headers([("authorization", owner.headers["Authorization"]), *headers]),
            )
        assert r.status_code == 422, r.text

    @pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16", "utf-32"])
    async def test_utf16_and_utf32_bodies_are_refused(
        self, client: httpx.AsyncClient, owner: UserAccount, encoding: str
    ) -> None:
        """json.loads guesses UTF-16/32; their NUL bytes would hide brackets, NULs and NaN from the checks."""
        content = ('{"name": "n", "metadata": {"a": ' + nested(5_000) + "}}").encode(encoding)
        r = await client.post(
            "/api/v1/sessions", content=content, headers={**owner.headers, "content-type": "application/json"}
        )
        assert_error_shape(r, 422, "invalid_characters")
        files = {"file": ("c.json", ('{"mcpServers": {"a": ' + nested(5_000) + "}}").encode(encoding))}
        r = await client.post("/api/v1/mcp-servers/import", files=files, headers=owner.headers)
        assert_error_shape(r, 422)

    def test_an_unterminated_string_is_scanned_in_one_pass(self) -> None:
        """A regex that failed after scanning to the end from each quote took an hour for 1 MB: this body's scan
        must still find the nesting before the string (the structure is what makes it linear; no timing here)."""
        body = b"[" * 65 + b'"' + b'\\"' * 300_000
        assert json_input.nests_too_deep(body)
        assert not json_input.nests_too_deep(b'{"a": "' + b"[" * 100 + b'"}')

    async def test_a_deep_multipart_upload_is_422(self, client: httpx.AsyncClient, owner: UserAccount) -> None:
        document = '{"mcpServers": {"a": ' + nested(100_000) + "}}"
        r = await client.post(
            "/api/v1/mcp-servers/import", files={"file": ("c.json", document.encode())}, headers=owner.headers
        )
        assert_error_shape(r, 422, "too_deeply_nested")

    async def test_brackets_inside_strings_do_not_count(self, client: httpx.AsyncClient, owner: UserAccount) -> None:
        metadata = {"code": "[" * 10_000, "shallow": json.loads(nested(10))}
        r = await client.post(
            "/api/v1/sessions", json={"name": "brackets", "metadata": metadata}, headers=owner.headers
        )
        assert r.status_code == 201, r.text
        assert r.json()["metadata"] == metadata

    async def test_a_deep_websocket_frame_is_an_error_frame_and_the_stream_goes_on(
        self, server_url: str, sessions: SessionsApi, owner: UserAccount
    ) -> None:
        s = await sessions.create(name="deep frame")
        async with await connect(server_url, s["id"], token=owner.access_token) as ws:
            stream = Stream(ws)
            await stream.until(lambda f: f["type"] == "connected")
            await ws.send('{"type": "query", "data": ' + nested(100_000) + "}")
            error = await stream.until(lambda f: f["type"] == "error")
            assert error["data"]["code"] == "too_deeply_nested"
            await stream.send(type="ping")
            await stream.until(lambda f: f["type"] == "pong")
        assert (await sessions.get(s["id"]))["message_count"] == 0


class TestLogin:
    async def test_guessing_one_users_password_is_stopped(self, app: object, users: Users) -> None:
        victim = await users.create(login=False)
        async with make_client(app) as c:
            for _ in range(LOGIN_PER_USER):
                r = await c.post("/api/v1/auth/login", json={"username": victim.username, "password": "guess"})
                assert_error_shape(r, 401)
        async with make_client(app) as other_address:  # per user: a new address does not reset it
            r = await other_address.post(
                "/api/v1/auth/login", json={"username": victim.username, "password": victim.password}
            )
            assert_error_shape(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) > 0

    async def test_guessing_from_one_address_is_stopped(self, app: object, users: Users) -> None:
        bystander = await users.create(login=False)
        async with make_client(app) as c:
            for i in range(LOGIN_PER_ADDRESS):
                r = await c.post("/api/v1/auth/login", json={"username": f"nobody{i}", "password": "guess"})
                assert_error_shape(r, 401)
            r = await c.post("/api/v1/auth/login", json={"username": bystander.username, "password": "guess"})
            assert_error_shape(r, 429, "rate_limited")
        async with make_client(app) as elsewhere:  # the user is not locked out from other addresses
            r = await elsewhere.post(
                "/api/v1/auth/login", json={"username": bystander.username, "password": bystander.password}
            )
            assert r.status_code == 200, r.text


@pytest.mark.slow
class TestQueryRate:
    async def test_a_query_flood_is_429_for_that_user_only(
        self, app: object, client: httpx.AsyncClient, users: Users, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(app_state(app).settings, "rate_limit_query_per_minute", 2)
        flooder, other = SessionsApi(client, await users.create()), SessionsApi(client, await users.create())
        targets = [await flooder.create(name=f"flood {i}") for i in range(3)]
        for s in targets[:2]:
            assert (await flooder.query(s["id"], "hello", wait=False)).status_code == 202
        r = await flooder.query(targets[2]["id"], "hello", wait=False)
        assert_error_shape(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) > 0
        assert (await flooder.get(targets[2]["id"]))["message_count"] == 0
        s = await other.create(name="bystander")
        assert (await other.query(s["id"], "hello", wait=False)).status_code == 202


@pytest.mark.slow
class TestLiveAgentsPerUser:
    async def test_one_user_cannot_take_every_agent(self, app: object, client: httpx.AsyncClient, users: Users) -> None:
        pool = app_state(app).require_agents()
        hog, other = SessionsApi(client, await users.create()), SessionsApi(client, await users.create())
        busy = [await hog.create(name=f"busy {i}") for i in range(PER_USER_AGENTS)]
        for s in busy:
            assert (await hog.query(s["id"], "sleep: 8", wait=False)).status_code == 202

        async def all_busy() -> bool:
            return all(pool.is_busy(uuid.UUID(s["id"])) for s in busy)

        await wait_until(all_busy, timeout=60)
        extra = await hog.create(name="one too many")

        # Asked to start at once, it is refused and nothing is recorded.
        r = await hog.query(extra["id"], "hello", wait=True)
        assert_error_shape(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) > 0
        assert (await hog.get(extra["id"]))["message_count"] == 0

        # Another user is served at once meanwhile.
        mine = await other.create(name="bystander")
        r = await other.query(mine["id"], "hello", wait=True)
        assert r.status_code == 200 and r.json()["result"] == "Echo: hello"

        # Sent without wait, it is queued and runs once one of the user's agents is free, never beside them.
        assert (await hog.query(extra["id"], "queued", wait=False)).status_code == 202
        ids = [uuid.UUID(s["id"]) for s in [*busy, extra]]

        async def extra_done() -> dict[str, Any] | None:
            live = [pool.is_live(i) for i in ids]
            assert sum(live) <= PER_USER_AGENTS, live
            s = await hog.get(extra["id"])
            return s if s["status"] == "active" else None

        await wait_until(extra_done, timeout=90)
        messages = await hog.items(extra["id"], "messages")
        assert [m["text"] for m in messages if m["role"] == "assistant"][-1] == "Echo: queued"


class TestStreamsPerUser:
    async def test_streams_beyond_the_limit_are_refused_for_that_user_only(
        self, app: object, server_url: str, client: httpx.AsyncClient, users: Users
    ) -> None:
        hog_user, other_user = await users.create(), await users.create()
        hog, other = SessionsApi(client, hog_user), SessionsApi(client, other_user)
        s = await hog.create(name="watched")
        streams = [await connect(server_url, s["id"], token=hog_user.access_token) for _ in range(PER_USER_STREAMS)]
        try:
            for ws in streams:
                await Stream(ws).until(lambda f: f["type"] == "connected")
            assert await close_code(server_url, s["id"], token=hog_user.access_token) == 4429
            async with httpx.AsyncClient(base_url=f"http://{server_url}") as http:
                r = await http.get(f"/api/v1/sessions/{s['id']}/events", headers=hog_user.headers)
                assert_error_shape(r, 429, "rate_limited")
                assert int(r.headers["retry-after"]) > 0
            mine = await other.create(name="mine")
            async with await connect(server_url, mine["id"], token=other_user.access_token) as ws:
                await Stream(ws).until(lambda f: f["type"] == "connected")
        finally:
            await streams.pop().close()

        async def reopened() -> bool:  # the closed stream's slot comes back once the server sees it go
            try:
                ws = await connect(server_url, s["id"], token=hog_user.access_token)
            except websockets.InvalidHandshake:
                return False
            async with ws:
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                except websockets.ConnectionClosed:
                    return False
                return bool(frame["type"] == "connected")

        try:
            await wait_until(reopened, timeout=15)
        finally:
            for ws in streams:
                await ws.close()


class TestArchiveBomb:
    async def test_an_archive_that_unpacks_past_the_limit_is_409_and_changes_nothing(
        self, app: object, client: httpx.AsyncClient, sessions: SessionsApi, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        state = app_state(app)
        s = await sessions.create(name="bomb")
        sid = uuid.UUID(s["id"])
        (sessions_service.workdir_of(state, sid) / "notes.txt").write_text("mine")
        r = await client.post(f"/api/v1/sessions/{sid}/archive", headers=sessions.user.headers)
        assert r.status_code == 201, r.text
        archive = sessions_service.archive_path(state, sid)
        original = archive.read_bytes()
        # An archive swapped on disk, or written by a server with a larger limit: 20 MB of zeros in ~20 kB.
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo("zeros.bin")
            info.size = 20 * 1024 * 1024
            tar.addfile(info, io.BytesIO(b"\0" * info.size))
        monkeypatch.setattr(state.settings, "max_workdir_bytes", 1024 * 1024)
        r = await client.post(f"/api/v1/sessions/{sid}/resume", headers=sessions.user.headers)
        assert_error_shape(r, 409, "archive_unrestorable")
        assert (await sessions.get(s["id"]))["status"] == "archived"
        assert not sessions_service.workdir_of(state, sid).exists()
        archive.write_bytes(original)
        r = await client.post(f"/api/v1/sessions/{sid}/resume", headers=sessions.user.headers)
        assert r.status_code == 200 and r.json()["status"] == "active"
        assert (sessions_service.workdir_of(state, sid) / "notes.txt").read_text() == "mine"
