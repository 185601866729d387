"""The session WebSocket against a real server: frames, replay, auth and close codes, fan-out, slow clients."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
import websockets

from tests.conftest import SessionsApi, Users, app_state
from tests.streaming.conftest import Stream, close_code, connect

pytestmark = pytest.mark.slow


def persisted(frames: list[dict[str, object]]) -> list[dict[str, object]]:
    return [f for f in frames if "seq" in f]


class TestAuthAndCloseCodes:
    async def test_unauthenticated_foreign_and_unknown(
        self, server_url: str, users: Users, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        assert await close_code(server_url, s["id"]) == 4401
        assert await close_code(server_url, s["id"], token="not-a-token") == 4401
        other = await users.create()
        assert await close_code(server_url, s["id"], token=other.access_token) == 4404
        assert await close_code(server_url, str(uuid.uuid4()), token=sessions.user.access_token) == 4404

    async def test_tickets_are_single_use_and_expire(
        self, app: object, server_url: str, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        r = await client.post(f"/api/v1/sessions/{s['id']}/stream-ticket", headers=sessions.user.headers)
        assert r.status_code == 201 and r.json()["expires_in"] == 30
        ticket = r.json()["ticket"]
        async with await connect(server_url, s["id"], ticket=ticket) as ws:
            assert (await Stream(ws).recv())["type"] == "connected"
        assert await close_code(server_url, s["id"], ticket=ticket) == 4401  # reused
        expired = (await client.post(f"/api/v1/sessions/{s['id']}/stream-ticket", headers=sessions.user.headers)).json()
        from sqlalchemy import update

        from agent_api.models import StreamTicket
        from agent_api.models.base import utcnow

        async with app_state(app).db.transaction() as db:
            await db.execute(update(StreamTicket).where(StreamTicket.used_at.is_(None)).values(expires_at=utcnow()))
        assert await close_code(server_url, s["id"], ticket=expired["ticket"]) == 4401

    async def test_origin_allowlist(self, app: object, server_url: str, sessions: SessionsApi) -> None:
        settings = app_state(app).settings
        s = await sessions.create(permission_mode="bypassPermissions")
        saved = settings.cors_origins
        settings.cors_origins = ["https://app.example.com"]
        try:
            code = await close_code(
                server_url, s["id"], headers={"Origin": "https://evil.example.com"}, token=sessions.user.access_token
            )
            assert code == 4403
            url = f"ws://{server_url}/api/v1/sessions/{s['id']}/stream?token={sessions.user.access_token}"
            async with websockets.connect(url, additional_headers={"Origin": "https://app.example.com"}) as ws:
                assert (await Stream(ws).recv())["type"] == "connected"
        finally:
            settings.cors_origins = saved

    async def test_the_token_never_reaches_a_log_line(
        self, server_url: str, sessions: SessionsApi, caplog: pytest.LogCaptureFixture
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        caplog.set_level(logging.DEBUG)
        token = sessions.user.access_token
        async with await connect(server_url, s["id"], token=token) as ws:
            stream = Stream(ws)
            await stream.recv()
            await stream.send(type="ping")
            await stream.until(lambda f: f["type"] == "pong")
        assert await close_code(server_url, s["id"], token=token + "x") == 4401
        # The test's own client library logs its request line at DEBUG; everything else is the server's.
        lines = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client")]
        assert any("stream" in line for line in lines), "expected the server to log the connections"
        assert not [line for line in lines if token in line]


class TestTurnOverTheStream:
    async def test_query_frames_in_order(self, server_url: str, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        async with await connect(server_url, s["id"], token=sessions.user.access_token) as ws:
            stream = Stream(ws)
            hello = await stream.recv()
            assert hello["type"] == "connected" and hello["data"]["status"] == "active"
            assert hello["session_id"] == s["id"] and "ts" in hello
            await stream.send(type="query", message="run: echo streamed")
            await stream.until(lambda f: f["type"] == "status_change" and f["data"]["status"] == "active")
        types = [f["type"] for f in persisted(stream.frames)]
        for expected in ("message_sent", "tool_call_started", "tool_call_completed", "message", "result"):
            assert expected in types, types
        order = [types.index(t) for t in ("message_sent", "tool_call_started", "tool_call_completed", "result")]
        assert order == sorted(order)
        processing = [
            i
            for i, f in enumerate(persisted(stream.frames))
            if f["type"] == "status_change" and f["data"]["status"] == "processing"
        ]
        assert processing and processing[0] < types.index("tool_call_started")
        seqs = [f["seq"] for f in persisted(stream.frames)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq strictly increasing, no gap"

    async def test_busy_query_gets_an_error_frame(self, server_url: str, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        async with await connect(server_url, s["id"], token=sessions.user.access_token) as ws:
            stream = Stream(ws)
            await stream.recv()
            await stream.send(type="query", message="sleep: 3")
            await stream.until(lambda f: f["type"] == "message_sent")
            await stream.send(type="query", message="second")
            error = await stream.until(lambda f: f["type"] == "error")
            assert error["data"]["code"] == "session_busy"
            await stream.send(type="query", message="x" * 50_001)
            error = await stream.until(lambda f: f["type"] == "error")
            assert error["data"]["code"] == "validation_error"
            await stream.send(type="interrupt")
            await stream.until(lambda f: f["type"] == "result")

    async def test_reconnect_with_after_seq_gets_every_event_once(self, server_url: str, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        async with await connect(server_url, s["id"], token=sessions.user.access_token, after_seq=0) as ws:
            first = Stream(ws)
            await first.recv()
            await first.send(type="query", message="write a.txt: 1\nrun: ls\nwrite b.txt: 2")
            await first.until(lambda f: f["type"] == "tool_call_started")
        seen = persisted(first.frames)
        last = seen[-1]["seq"]
        done = await sessions.wait_status(s["id"], "active")
        async with await connect(server_url, s["id"], token=sessions.user.access_token, after_seq=last) as ws:
            second = Stream(ws)
            hello = await second.recv()
            latest = hello["data"]["latest_seq"]
            while not persisted(second.frames) or persisted(second.frames)[-1]["seq"] < latest:
                await second.recv()
        all_seqs = [f["seq"] for f in seen] + [f["seq"] for f in persisted(second.frames)]
        assert all_seqs == list(range(1, latest + 1)), "every event exactly once, in order"
        assert done["status"] == "active"

    async def test_permission_request_raised_offline_is_delivered_on_connect(
        self, server_url: str, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write gated.txt: yes", wait=False)
        assert r.status_code == 202
        await sessions.wait_status(s["id"], "waiting")
        async with await connect(server_url, s["id"], token=sessions.user.access_token) as ws:
            stream = Stream(ws)
            hello = await stream.recv()
            pending = hello["data"]["pending_permission_requests"]
            assert len(pending) == 1 and pending[0]["tool"] == "Write"
            await stream.send(type="permission_response", request_id=pending[0]["request_id"], decision="allow")
            await stream.until(lambda f: f["type"] == "result")
        calls = await sessions.items(s["id"], "tool-calls")
        assert calls[0]["name"] == "Write" and calls[0]["is_error"] is False
        decisions = await sessions.items(s["id"], "permissions")
        assert [(d["decision"], d["decided_by"]) for d in decisions if d["tool_name"] == "Write"] == [("allow", "user")]


class TestFanOut:
    async def test_two_subscribers_see_the_same_sequence_and_a_stalled_one_does_not_hold_the_other(
        self, server_url: str, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        token = sessions.user.access_token
        async with (
            await connect(server_url, s["id"], token=token) as ws_a,
            await connect(server_url, s["id"], token=token) as ws_b,
            await connect(server_url, s["id"], token=token) as ws_stalled,
        ):
            a, b = Stream(ws_a), Stream(ws_b)
            await a.recv()
            await b.recv()
            # ws_stalled never reads: its frames pile up in its own buffers only.
            r = await sessions.query(s["id"], "write f.txt: fan out\nrun: ls", wait=True)
            assert r.status_code == 200
            await a.until(lambda f: f["type"] == "status_change" and f["data"]["status"] == "active", timeout=30)
            await b.until(lambda f: f["type"] == "status_change" and f["data"]["status"] == "active", timeout=30)
            assert [(f["seq"], f["type"]) for f in persisted(a.frames)] == [
                (f["seq"], f["type"]) for f in persisted(b.frames)
            ]
            assert len(persisted(a.frames)) >= 8
            del ws_stalled


class TestHeartbeat:
    async def test_idle_connections_get_heartbeats(self, app: object, server_url: str, sessions: SessionsApi) -> None:
        settings = app_state(app).settings
        saved = settings.ws_heartbeat_s
        settings.ws_heartbeat_s = 0.2
        try:
            s = await sessions.create(permission_mode="bypassPermissions")
            async with await connect(server_url, s["id"], token=sessions.user.access_token) as ws:
                stream = Stream(ws)
                await stream.recv()
                beat = await stream.until(lambda f: f["type"] == "heartbeat", timeout=10)
                assert "seq" not in beat
        finally:
            settings.ws_heartbeat_s = saved


class TestPartialDeltas:
    async def test_partial_subscribers_get_unsaved_deltas(self, server_url: str, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        token = sessions.user.access_token
        text = "a fairly long sentence so that the answer streams in several pieces"
        async with (
            await connect(server_url, s["id"], token=token, partial=1) as ws_partial,
            await connect(server_url, s["id"], token=token) as ws_plain,
        ):
            partial, plain = Stream(ws_partial), Stream(ws_plain)
            await partial.recv()
            await plain.recv()
            await partial.send(type="query", message=text)
            await partial.until(lambda f: f["type"] == "result")
            await plain.until(lambda f: f["type"] == "result")
        deltas = [f for f in partial.frames if f["type"] == "delta"]
        assert len(deltas) >= 2 and all("seq" not in f for f in deltas)
        assert "".join(f["data"]["text"] for f in deltas) == f"Echo: {text}"
        assert not [f for f in plain.frames if f["type"] == "delta"]


class TestBadParameters:
    @pytest.mark.parametrize("after_seq", ["%C2%B2", "9" * 30, "-1", "abc"])
    async def test_a_bad_after_seq_is_a_clean_close(
        self, server_url: str, sessions: SessionsApi, after_seq: str
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        assert await close_code(server_url, s["id"], token=sessions.user.access_token, after_seq=after_seq) == 4400
