"""`GET /sessions/{id}/events` (Server-Sent Events) against a real server: auth and tickets, replay with
`Last-Event-ID` / `after_seq`, live events, the WebSocket's frames, heartbeats, shut-down, and the client."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import update

from agent_api.app import create_app
from agent_api.client import AgentApiClient, ApiError
from agent_api.models import StreamTicket
from agent_api.models.base import utcnow
from agent_api.streaming import sse
from agent_api.streaming.service import EventStream, latest_seq
from tests.conftest import SessionsApi, Users, app_state, assert_error_shape, wait_until
from tests.streaming.conftest import SERVER_OPTIONS, Stream, close_code, connect, free_port
from tests.streaming.test_bus import write_events

Frame = dict[str, Any]


def events_path(session_id: str) -> str:
    return f"/api/v1/sessions/{session_id}/events"


@dataclass
class Record:
    id: str | None
    event: str | None
    data: str

    @property
    def frame(self) -> Frame:
        return json.loads(self.data)  # type: ignore[no-any-return]


@dataclass
class EventReader:
    """Reads the records of a streamed `text/event-stream` response as they arrive."""

    response: httpx.Response
    records: list[Record] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lines = self.response.aiter_lines()

    async def next(self, timeout: float = 30.0) -> Record | None:
        """The next record, or None when the server ended the stream."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if not line:
                    if fields:
                        record = Record(fields.get("id"), fields.get("event"), fields["data"])
                        self.records.append(record)
                        return record
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        return None

    async def comment(self, timeout: float) -> str:
        """The next comment line, where nothing else may come first."""
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line.startswith(":"):
                    self.comments.append(line)
                    return line
                assert not line, f"expected only comments, got {line!r}"
        raise AssertionError("the stream ended")

    async def record(self, timeout: float = 30.0) -> Record:
        record = await self.next(timeout)
        assert record is not None, "the stream ended"
        return record

    async def through_seq(self, seq: int, timeout: float = 30.0) -> list[Record]:
        """Records until the one with `id: seq` (included)."""
        got: list[Record] = []
        async with asyncio.timeout(timeout):
            while not got or got[-1].id != str(seq):
                got.append(await self.record())
        return got


def ids(records: list[Record]) -> list[int]:
    return [int(r.id) for r in records if r.id is not None]


@asynccontextmanager
async def open_events(
    server_url: str, session_id: str, *, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[EventReader]:
    async with (
        httpx.AsyncClient(base_url=f"http://{server_url}", timeout=httpx.Timeout(15, read=None)) as http,
        http.stream("GET", events_path(session_id), params=params, headers=headers or {}) as r,
    ):
        if r.status_code != 200:
            await r.aread()
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        yield EventReader(r)


async def status_of(server_url: str, session_id: str, *, headers: dict[str, str] | None = None, **params: Any) -> int:
    """The status a request for the stream gets (a refused one is a plain, finished response)."""
    async with (
        httpx.AsyncClient(base_url=f"http://{server_url}", timeout=15) as http,
        http.stream("GET", events_path(session_id), params=params, headers=headers or {}) as r,
    ):
        return r.status_code


async def quiet_session(app: object, sessions: SessionsApi) -> tuple[str, int]:
    """A session whose agent has started, so only the test writes its events; and its latest seq."""
    s = await sessions.create(permission_mode="bypassPermissions")
    await sessions.wait_status(s["id"], "active")
    async with app_state(app).db.transaction(readonly=True) as db:
        return s["id"], await latest_seq(db, uuid.UUID(s["id"]))


async def ticket_for(client: httpx.AsyncClient, sessions: SessionsApi, session_id: str) -> str:
    r = await client.post(f"/api/v1/sessions/{session_id}/stream-ticket", headers=sessions.user.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["ticket"])


class TestAuth:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        assert_error_shape(await client.get(events_path(s["id"])), 401, "unauthorized")
        bad = await client.get(events_path(s["id"]), headers={"Authorization": "Bearer not-a-token"})
        assert_error_shape(bad, 401, "invalid_token")
        assert_error_shape(await client.get(events_path(s["id"]), params={"ticket": "wst_nope"}), 401)

    async def test_another_users_or_an_unknown_session_is_404(
        self, client: httpx.AsyncClient, users: Users, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        other = await users.create()
        assert_error_shape(await client.get(events_path(s["id"]), headers=other.headers), 404, "session_not_found")
        unknown = await client.get(events_path(str(uuid.uuid4())), headers=sessions.user.headers)
        assert_error_shape(unknown, 404, "session_not_found")

    @pytest.mark.parametrize("value", ["-1", "abc", "9" * 30, "1e3", "²"])
    async def test_a_bad_after_seq_or_last_event_id_is_422(
        self, client: httpx.AsyncClient, sessions: SessionsApi, value: str
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        r = await client.get(events_path(s["id"]), params={"after_seq": value}, headers=sessions.user.headers)
        assert_error_shape(r, 422, "validation_error")
        headers = sessions.user.headers | {"Last-Event-ID": value}
        r = await client.get(events_path(s["id"]), headers={k: v.encode() for k, v in headers.items()})
        assert_error_shape(r, 422, "validation_error")

    def test_the_route_is_in_the_openapi_document(self, app: object) -> None:
        operation = app.openapi()["paths"]["/api/v1/sessions/{session_id}/events"]["get"]  # type: ignore[attr-defined]
        assert "text/event-stream" in operation["responses"]["200"]["content"]
        assert operation["description"]
        assert {p["name"] for p in operation["parameters"]} >= {"after_seq", "ticket", "Last-Event-ID"}


class TestTickets:
    async def test_a_ticket_opens_the_stream_and_again_for_a_reconnect(
        self, app: object, server_url: str, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        sid, start = await quiet_session(app, sessions)
        ticket = await ticket_for(client, sessions, sid)
        async with open_events(server_url, sid, ticket=ticket) as first:
            hello = await first.record()
            assert (hello.event, hello.id) == ("connected", None)
            await write_events(app, sid, 3)
            got = await first.through_seq(start + 3)
        # EventSource reconnects with the URL it was given, and the last id it saw.
        async with open_events(server_url, sid, headers={"Last-Event-ID": str(start + 1)}, ticket=ticket) as again:
            assert (await again.record()).event == "connected"
            assert ids(await again.through_seq(start + 3)) == [start + 2, start + 3]
        assert ids(got) == [start + 1, start + 2, start + 3]

    async def test_a_ticket_of_another_session_is_refused(
        self, server_url: str, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        a = await sessions.create(permission_mode="bypassPermissions")
        b = await sessions.create(permission_mode="bypassPermissions")
        ticket = await ticket_for(client, sessions, a["id"])
        assert await status_of(server_url, b["id"], ticket=ticket) == 401
        async with open_events(server_url, a["id"], ticket=ticket) as reader:  # still good for its own session
            assert (await reader.record()).event == "connected"

    async def test_a_ticket_the_websocket_used_is_refused_and_the_other_way_round(
        self, server_url: str, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        ws_ticket = await ticket_for(client, sessions, s["id"])
        async with await connect(server_url, s["id"], ticket=ws_ticket) as ws:
            assert (await Stream(ws).recv())["type"] == "connected"
        assert await status_of(server_url, s["id"], ticket=ws_ticket) == 401

        sse_ticket = await ticket_for(client, sessions, s["id"])
        async with open_events(server_url, s["id"], ticket=sse_ticket) as reader:
            assert (await reader.record()).event == "connected"
        assert await close_code(server_url, s["id"], ticket=sse_ticket) == 4401
        assert await status_of(server_url, s["id"], ticket=sse_ticket) == 200  # the WebSocket's refusal took nothing

    async def test_an_expired_ticket_is_refused_also_after_it_was_used(
        self, app: object, server_url: str, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        ticket = await ticket_for(client, sessions, s["id"])
        assert await status_of(server_url, s["id"], ticket=ticket) == 200
        async with app_state(app).db.transaction() as db:
            # Held by an SSE stream (used at its expiry), and the expiry has come.
            now = utcnow()
            sid = uuid.UUID(s["id"])
            await db.execute(
                update(StreamTicket).where(StreamTicket.session_id == sid).values(expires_at=now, used_at=now)
            )
        assert await status_of(server_url, s["id"], ticket=ticket) == 401


class TestEvents:
    async def test_frames_in_order_with_id_seq_and_the_websockets_data(
        self, server_url: str, sessions: SessionsApi
    ) -> None:
        """A real turn on the offline model, watched over both streams at once."""
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        token = sessions.user.access_token
        async with (
            await connect(server_url, s["id"], token=token) as ws,
            open_events(server_url, s["id"], headers=sessions.user.headers) as reader,
        ):
            stream = Stream(ws)
            ws_hello = await stream.recv()
            hello = await reader.record()
            assert (hello.event, hello.id) == ("connected", None)
            assert (
                hello.frame["type"] == "connected" and hello.frame["session_id"] == s["id"] and "seq" not in hello.frame
            )
            assert hello.frame["data"]["latest_seq"] == ws_hello["data"]["latest_seq"]
            r = await sessions.query(s["id"], "run: echo over-sse", wait=False)
            assert r.status_code == 202, r.text
            last = await stream.until(lambda f: f["type"] == "status_change" and f["data"]["status"] == "active")
            records = await reader.through_seq(last["seq"])
        assert all(r.id is not None for r in records)
        for record in records:
            assert record.id == str(record.frame["seq"]) and record.event == record.frame["type"]
        seqs = ids(records)
        assert seqs == list(range(hello.frame["data"]["latest_seq"] + 1, last["seq"] + 1)), "in order, no gap"
        types = [r.event for r in records]
        order = [types.index(t) for t in ("message_sent", "tool_call_started", "tool_call_completed", "result")]
        assert order == sorted(order), types
        ws_by_seq = {f["seq"]: f for f in stream.frames if "seq" in f}
        assert [r.frame for r in records] == [ws_by_seq[seq] for seq in seqs], "the WebSocket's frames, to the byte"

    async def test_last_event_id_gets_exactly_the_events_after_it_then_live_ones(
        self, app: object, server_url: str, sessions: SessionsApi
    ) -> None:
        sid, start = await quiet_session(app, sessions)
        await write_events(app, sid, 10)
        seen = start + 4
        # EventSource keeps its URL (`after_seq` included) and adds the last id it saw: the header wins.
        headers = sessions.user.headers | {"Last-Event-ID": str(seen)}
        async with open_events(server_url, sid, headers=headers, after_seq=start) as reader:
            hello = await reader.record()
            assert hello.frame["data"]["latest_seq"] == start + 10
            replayed = await reader.through_seq(start + 10)
            await write_events(app, sid, 5)
            live = await reader.through_seq(start + 15)
        assert ids(replayed) == list(range(seen + 1, start + 11))
        assert ids(live) == list(range(start + 11, start + 16))
        assert [r.frame["data"]["n"] for r in replayed + live] == [*range(4, 10), *range(5)]

    async def test_after_seq_replays_from_there(self, app: object, server_url: str, sessions: SessionsApi) -> None:
        sid, start = await quiet_session(app, sessions)
        await write_events(app, sid, 6)
        async with open_events(server_url, sid, headers=sessions.user.headers, after_seq=start + 2) as reader:
            await reader.record()
            assert ids(await reader.through_seq(start + 6)) == [start + 3, start + 4, start + 5, start + 6]
            await write_events(app, sid, 1)
            assert ids(await reader.through_seq(start + 7)) == [start + 7]

    async def test_without_either_only_live_events(self, app: object, server_url: str, sessions: SessionsApi) -> None:
        sid, start = await quiet_session(app, sessions)
        await write_events(app, sid, 5)
        async with open_events(server_url, sid, headers=sessions.user.headers) as reader:
            hello = await reader.record()
            assert hello.frame["data"]["latest_seq"] == start + 5
            await write_events(app, sid, 3)
            assert ids(await reader.through_seq(start + 8)) == [start + 6, start + 7, start + 8]

    async def test_no_gap_and_no_duplicate_while_events_are_written_during_the_replay(
        self, app: object, server_url: str, sessions: SessionsApi
    ) -> None:
        sid, start = await quiet_session(app, sessions)
        await write_events(app, sid, 50)
        writer = asyncio.create_task(write_events(app, sid, 400, per_tx=5))
        try:
            async with open_events(server_url, sid, headers=sessions.user.headers, after_seq=start + 10) as reader:
                await reader.record()
                records = await reader.through_seq(start + 450, timeout=60)
        finally:
            await writer
        assert ids(records) == list(range(start + 11, start + 451))


class TestHeartbeat:
    async def test_an_idle_stream_gets_comments(
        self, app: object, server_url: str, sessions: SessionsApi, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sse, "HEARTBEAT_S", 0.2)
        sid, _ = await quiet_session(app, sessions)
        async with open_events(server_url, sid, headers=sessions.user.headers) as reader:
            await reader.record()
            first = await reader.comment(timeout=10)
            second = await reader.comment(timeout=10)
        assert first.startswith(": ping") and second.startswith(": ping")


class TestSlowClient:
    async def test_a_client_that_stopped_reading_is_let_go(
        self, app: object, server_url: str, sessions: SessionsApi, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = app_state(app).settings
        saved = settings.ws_send_timeout_s
        settings.ws_send_timeout_s = 0.5
        sid, _ = await quiet_session(app, sessions)
        host, port = server_url.split(":")
        reader, writer = await asyncio.open_connection(host, int(port), limit=2**16)
        try:
            # A small receive buffer, and nobody reads it: the server's writes stall for real.
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            writer.write(
                f"GET {events_path(sid)} HTTP/1.1\r\nHost: {server_url}\r\n"
                f"Authorization: Bearer {sessions.user.access_token}\r\n\r\n".encode()
            )
            await writer.drain()
            assert b" 200 " in await reader.readuntil(b"\r\n")
            bus = app_state(app).require_bus()

            async def subscribed() -> bool:
                return bus.subscriber_count(uuid.UUID(sid)) == 1

            await wait_until(subscribed, timeout=10)
            await write_events(app, sid, 300, size=20_000)

            async def let_go() -> bool:
                return bus.subscriber_count(uuid.UUID(sid)) == 0

            await wait_until(let_go, timeout=15)

            # Logged once the response gives up, just after the subscription closes.
            async def logged() -> bool:
                return any("stopped reading" in r.getMessage() for r in caplog.records)

            await wait_until(logged, timeout=10)
        finally:
            settings.ws_send_timeout_s = saved
            writer.close()


class TestEventStreamStop:
    async def test_stop_ends_a_waiting_or_a_busy_reader(self, app: object, sessions: SessionsApi) -> None:
        state = app_state(app)
        sid, start = await quiet_session(app, sessions)
        bus = state.require_bus()
        waiting = EventStream(state, bus.subscribe(uuid.UUID(sid)), start)
        try:
            assert await waiting.next_batch(idle_s=0.05) is None  # caught up, nothing new
            task = asyncio.create_task(waiting.next_batch())  # waits for the bus, no timer

            async def blocked() -> bool:
                return bool(waiting.sub.queue._getters)  # type: ignore[attr-defined]

            await wait_until(blocked, timeout=5)
            waiting.stop()
            assert await asyncio.wait_for(task, 5) is None
        finally:
            waiting.sub.close()
        saved = bus.queue_size
        bus.queue_size = 3
        busy = EventStream(state, bus.subscribe(uuid.UUID(sid)), start)
        bus.queue_size = saved
        try:
            await write_events(app, sid, 3)  # an inbox full of events, none read yet
            assert busy.sub.queue.full()
            busy.stop()
            assert await asyncio.wait_for(busy.next_batch(), 5) is None
        finally:
            busy.sub.close()


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


class TestShutdown:
    async def test_the_end_of_the_lifespan_ends_open_streams(self, app: object, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        other = create_app(app_state(app).settings.model_copy(update={"auto_migrate": False}))
        lifespan = other.router.lifespan_context(other)
        await lifespan.__aenter__()
        port = free_port()
        config = uvicorn.Config(other, host="127.0.0.1", port=port, lifespan="off", **SERVER_OPTIONS)  # type: ignore[arg-type]
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        exited = False
        try:
            await wait_until(lambda: _started(server), timeout=15)
            async with open_events(f"127.0.0.1:{port}", s["id"], headers=sessions.user.headers) as reader:
                assert (await reader.record()).event == "connected"
                bus = app_state(other).require_bus()
                assert bus.subscriber_count(uuid.UUID(s["id"])) == 1
                await lifespan.__aexit__(None, None, None)  # the application shuts down
                exited = True
                assert await reader.next(timeout=10) is None, "the stream ends"
            assert bus.subscriber_count(uuid.UUID(s["id"])) == 0
        finally:
            if not exited:
                await lifespan.__aexit__(None, None, None)
            server.should_exit = True
            await asyncio.wait_for(task, 15)

    @pytest.mark.slow
    async def test_sigterm_ends_open_streams_and_the_server_exits(self, tmp_path: Path) -> None:
        """`agent-api serve` for real: uvicorn waits for open responses before it shuts down, forever by default,
        so an event stream that did not end would keep the process alive."""
        from tests.test_cli import Server, _env

        env = _env(tmp_path / "data", AGENT_API_ADMIN_USERNAME="boss", AGENT_API_ADMIN_PASSWORD="boss-password-123")
        server = Server(tmp_path / "data", free_port(), tmp_path, env)
        try:
            await asyncio.to_thread(server.wait_healthy, 60)
            async with AgentApiClient(server.base_url) as api:
                await api.login("boss", "boss-password-123")
                s = await api.create_session(permission_mode="bypassPermissions")
                frames = api.events(s["id"])
                assert (await anext(frames))["type"] == "connected"
                server.proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(15):
                    # Ends when the server ends the stream, cleanly: a cut-off chunked body would raise here.
                    rest = [frame async for frame in frames]
            assert all(f["type"] != "error" for f in rest)
            try:
                code = await asyncio.to_thread(server.proc.wait, 30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"agent-api serve did not exit within 30s of SIGTERM\n{server.output()}")
            output = server.output()
            assert code in (0, -signal.SIGTERM), output
            assert "Application shutdown complete" in output, output
            # Ended with its last chunk, not cut off ("ASGI callable returned without completing response").
            assert "Traceback" not in output and '"level": "error"' not in output, output
        finally:
            server.stop()


class RecordingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


class TestClient:
    async def test_events_resumes_after_seq_with_last_event_id(
        self, app: object, server_url: str, sessions: SessionsApi
    ) -> None:
        sid, start = await quiet_session(app, sessions)
        await write_events(app, sid, 4)
        transport = RecordingTransport()
        async with AgentApiClient(f"http://{server_url}", token=sessions.user.access_token, transport=transport) as api:
            frames: list[Frame] = []
            async with asyncio.timeout(30), aclosing(api.events(sid, after_seq=start + 1)) as events:
                async for frame in events:
                    frames.append(frame)
                    if frame.get("seq") == start + 4:
                        await write_events(app, sid, 1)
                    if frame.get("seq") == start + 5:
                        break
        assert frames[0]["type"] == "connected"
        assert [f["seq"] for f in frames[1:]] == [start + 2, start + 3, start + 4, start + 5]
        assert [f["data"]["n"] for f in frames[1:]] == [1, 2, 3, 0]
        sent = transport.requests[-1]
        assert sent.url.path == events_path(sid) and sent.headers["last-event-id"] == str(start + 1)
        assert "after_seq" not in str(sent.url)

    async def test_events_without_after_seq_are_live_only_and_refusals_raise(
        self, app: object, server_url: str, sessions: SessionsApi
    ) -> None:
        sid, start = await quiet_session(app, sessions)
        await write_events(app, sid, 2)
        async with AgentApiClient(f"http://{server_url}", token=sessions.user.access_token) as api:
            async with asyncio.timeout(30), aclosing(api.events(sid)) as frames:
                hello = await anext(frames)
                assert hello["type"] == "connected" and hello["data"]["latest_seq"] == start + 2
                await write_events(app, sid, 1)
                assert (await anext(frames))["seq"] == start + 3
            with pytest.raises(ApiError) as info:
                await anext(api.events(str(uuid.uuid4())))
            assert (info.value.status, info.value.code) == (404, "session_not_found")
        async with AgentApiClient(f"http://{server_url}") as anonymous:
            with pytest.raises(ApiError) as info:
                await anext(anonymous.events(sid))
            assert info.value.status == 401
