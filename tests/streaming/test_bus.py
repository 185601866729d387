"""The event bus and the per-subscriber stream: commit-only publication, gap filling, the PostgreSQL bus across processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from agent_api.bus import BusEvent, PostgresEventBus
from agent_api.event_log import append_event
from agent_api.streaming.service import EventStream
from tests.conftest import SessionsApi, app_state, wait_until
from tests.streaming.conftest import SERVER_OPTIONS, Stream, connect, open_stalled


async def write_events(app: object, session_id: str, count: int, size: int = 10, per_tx: int = 50) -> None:
    sid = uuid.UUID(session_id)
    payload = "x" * size
    done = 0
    while done < count:
        async with app_state(app).db.transaction() as db:
            for _ in range(min(per_tx, count - done)):
                await append_event(db, sid, "test_event", {"n": done, "pad": payload})
                done += 1


class TestLocalBus:
    async def test_only_committed_events_are_published(self, app: object, sessions: SessionsApi) -> None:
        state = app_state(app)
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        sid = uuid.UUID(s["id"])
        sub = state.require_bus().subscribe(sid)
        try:
            with pytest.raises(RuntimeError):
                async with state.db.transaction() as db:
                    await append_event(db, sid, "doomed", {})
                    raise RuntimeError("roll back")
            await write_events(app, s["id"], 1)
            heard: list[BusEvent] = []
            while not any(e.data is not None for e in heard):
                heard.append(await asyncio.wait_for(sub.queue.get(), 5))
            while not sub.queue.empty():
                heard.append(sub.queue.get_nowait())
            # With PostgreSQL, NOTIFYs (seq only, no data) also arrive, for this event and late ones for earlier
            # events; only rows that were committed ever show up with data.
            assert [e.type for e in heard if e.data is not None] == ["test_event"]
            assert "doomed" not in {e.type for e in heard}
        finally:
            sub.close()

    async def test_an_overflowing_subscriber_catches_up_from_the_log(self, app: object, sessions: SessionsApi) -> None:
        state = app_state(app)
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")  # the warm-up's own events are done
        sid = uuid.UUID(s["id"])
        async with state.db.transaction(readonly=True) as db:
            from agent_api.streaming.service import latest_seq

            start = await latest_seq(db, sid)
        bus = state.require_bus()
        saved = bus.queue_size
        bus.queue_size = 5
        sub = bus.subscribe(sid)
        bus.queue_size = saved
        try:
            stream = EventStream(state, sub, start)
            await write_events(app, s["id"], 40)
            assert sub.overflowed
            got: list[int] = []
            while len(got) < 40:
                batch = await stream.next_batch(5)
                assert batch is not None, "stream stalled"
                got.extend(e.seq for e in batch if e.seq is not None)
            assert got == list(range(start + 1, start + 41))
            assert stream.last == start + 40
        finally:
            sub.close()


class TestSlowSubscriber:
    async def test_a_stalled_client_is_closed_and_the_other_gets_everything(
        self, app: object, server_url: str, sessions: SessionsApi, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = app_state(app).settings
        saved = settings.ws_send_timeout_s
        settings.ws_send_timeout_s = 0.5
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        token = sessions.user.access_token
        try:
            path = f"/api/v1/sessions/{s['id']}/stream?token={token}"
            _stalled_reader, stalled_writer = await open_stalled(server_url, path)
            async with await connect(server_url, s["id"], token=token) as healthy_ws:
                healthy = Stream(healthy_ws)
                start = (await healthy.recv())["data"]["latest_seq"]
                writer = asyncio.create_task(write_events(app, s["id"], 600, size=20_000, per_tx=100))
                got = 0
                while got < 600:
                    frame = await healthy.recv(timeout=30)
                    if frame["type"] == "test_event":
                        assert frame["seq"] == start + got + 1
                        got += 1
                await writer

            async def stalled_gone() -> bool:
                return app_state(app).require_bus().subscriber_count(uuid.UUID(s["id"])) == 0

            # Dropped within the send timeout and the bounded close, not held open for it.
            await wait_until(stalled_gone, timeout=10)
            stalled_writer.close()
            assert any("stopped reading" in r.getMessage() for r in caplog.records)
        finally:
            settings.ws_send_timeout_s = saved


class TestRestart:
    async def test_replay_after_a_server_restart(
        self, app: object, database_url: str, tmp_path_factory: pytest.TempPathFactory, sessions: SessionsApi
    ) -> None:
        import uvicorn

        from agent_api.app import create_app
        from tests.streaming.conftest import free_port

        s = await sessions.create(permission_mode="bypassPermissions")
        await write_events(app, s["id"], 30)
        state = app_state(app)
        restarted = create_app(state.settings.model_copy(update={"auto_migrate": False}))
        async with restarted.router.lifespan_context(restarted):
            port = free_port()
            config = uvicorn.Config(restarted, host="127.0.0.1", port=port, lifespan="off", **SERVER_OPTIONS)  # type: ignore[arg-type]
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve())
            await wait_until(lambda: _started(server), timeout=15)
            try:
                async with await connect(
                    f"127.0.0.1:{port}", s["id"], token=sessions.user.access_token, after_seq=10
                ) as ws:
                    stream = Stream(ws)
                    latest = (await stream.recv())["data"]["latest_seq"]
                    seqs: list[int] = []
                    while not seqs or seqs[-1] < latest:
                        frame = await stream.recv()
                        seqs.append(frame["seq"])
                assert seqs == list(range(11, latest + 1))
            finally:
                server.should_exit = True
                await asyncio.wait_for(task, 15)


async def _started(server: Any) -> bool:
    return bool(server.started)


WRITER = """
import asyncio, sys, uuid
from agent_api.db import Database
from agent_api.event_log import append_event
from agent_api.bus import PostgresEventBus

async def main(url, session_id):
    db = Database(url)
    db.bus = PostgresEventBus(url)
    async with db.transaction() as s:
        event = await append_event(s, uuid.UUID(session_id), "from_another_process", {"pid": 1})
        print(event.seq)
    await db.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class TestPostgresBus:
    async def test_an_event_from_another_process_reaches_a_subscriber(
        self, app: object, database_url: str, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        if not database_url.startswith("postgresql"):
            pytest.skip("the PostgreSQL bus needs PostgreSQL")
        bus = app_state(app).require_bus()
        assert isinstance(bus, PostgresEventBus)
        await asyncio.wait_for(bus.listening.wait(), 10)
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        sub = bus.subscribe(uuid.UUID(s["id"]))
        try:
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", WRITER, database_url, s["id"]],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ},
            )
            assert result.returncode == 0, result.stderr
            seq = int(result.stdout.strip())
            event: BusEvent = await asyncio.wait_for(sub.queue.get(), 10)
            # Only news crosses processes; a stream subscriber reads the row itself.
            assert event.session_id == uuid.UUID(s["id"]) and event.seq == seq and event.data is None
        finally:
            sub.close()


class TestSequence:
    async def test_seq_is_gap_free_under_concurrent_writers(self, app: object, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        sid = uuid.UUID(s["id"])

        async def one(n: int) -> int:
            async with app_state(app).db.transaction() as db:
                return (await append_event(db, sid, "concurrent", {"n": n})).seq

        seqs = await asyncio.gather(*(one(n) for n in range(40)))
        assert len(set(seqs)) == 40
        from sqlalchemy import select

        from agent_api.models import SessionEvent

        async with app_state(app).db.transaction(readonly=True) as db:
            stored = (await db.scalars(select(SessionEvent.seq).where(SessionEvent.session_id == sid))).all()
        assert sorted(stored) == list(range(1, len(stored) + 1))


class TestShutdown:
    async def test_open_streams_are_closed_with_1012(self, app: object, sessions: SessionsApi) -> None:
        import json

        import uvicorn
        import websockets

        from agent_api.app import create_app
        from tests.streaming.conftest import free_port

        s = await sessions.create(permission_mode="bypassPermissions")
        other = create_app(app_state(app).settings.model_copy(update={"auto_migrate": False}))
        lifespan = other.router.lifespan_context(other)
        await lifespan.__aenter__()
        port = free_port()
        config = uvicorn.Config(other, host="127.0.0.1", port=port, lifespan="off", **SERVER_OPTIONS)  # type: ignore[arg-type]
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            await wait_until(lambda: _started(server), timeout=15)
            async with await connect(f"127.0.0.1:{port}", s["id"], token=sessions.user.access_token) as ws:
                assert json.loads(await ws.recv())["type"] == "connected"
                await lifespan.__aexit__(None, None, None)  # the application shuts down (SIGTERM's path)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)
