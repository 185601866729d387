"""The event bus: wakes stream subscribers when events of their session commit.

Events themselves live in the `session_events` table; the bus only carries news of them. In one process the
committed rows travel in memory (fast path). With PostgreSQL, every event also sends `NOTIFY` (session id and seq)
inside its transaction, so subscribers in other processes wake and read the rows from the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.db import after_commit

log = logging.getLogger("agent_api.streaming")
NOTIFY_CHANNEL = "agent_api_events"


def frame_text(type_: str, session_id: uuid.UUID, data: Any, seq: int | None = None, ts: datetime | None = None) -> str:
    """A server frame `{"type", "session_id", "seq"?, "ts", "data"}` as the text sent on the wire: the one encoder
    of stream frames, stored events and the stream's own (connected, pong, error...) alike."""
    body: dict[str, Any] = {"type": type_, "session_id": str(session_id)}
    if seq is not None:
        body["seq"] = seq
    body["ts"] = (ts or datetime.now(UTC)).isoformat()
    body["data"] = data
    return json.dumps(body, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class BusEvent:
    session_id: uuid.UUID
    seq: int | None  # None: an ephemeral event (token deltas), never stored
    type: str = ""
    data: dict[str, Any] | None = None  # None: only news that `seq` exists (from another process)
    created_at: datetime | None = None

    @cached_property
    def frame_text(self) -> str:
        """The server frame for this event, encoded once however many subscribers send it."""
        return frame_text(self.type, self.session_id, self.data, self.seq, self.created_at)


class Subscription:
    """One subscriber's bounded inbox. When it overflows, the subscriber catches up from the table instead."""

    def __init__(self, bus: EventBus, session_id: uuid.UUID, maxsize: int, partial: bool) -> None:
        self.bus = bus
        self.session_id = session_id
        self.partial = partial
        self.queue: asyncio.Queue[BusEvent] = asyncio.Queue(maxsize)
        self.overflowed = False
        # What the subscriber does when the server shuts down (a WebSocket closes with 1012).
        self.on_shutdown: Callable[[], Awaitable[None]] | None = None

    def push(self, event: BusEvent) -> None:
        if event.seq is None and not self.partial:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    """In-process fan-out."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[uuid.UUID, set[Subscription]] = defaultdict(set)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def subscribe(self, session_id: uuid.UUID, *, partial: bool = False) -> Subscription:
        sub = Subscription(self, session_id, self.queue_size, partial)
        self._subscribers[session_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.session_id]

    def subscriber_count(self, session_id: uuid.UUID) -> int:
        return len(self._subscribers.get(session_id, ()))

    async def shut_down_subscribers(self) -> None:
        """Tell every subscriber the server is going away (before the bus itself stops)."""
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                if sub.on_shutdown is not None:
                    await sub.on_shutdown()

    def publish(self, events: list[Any]) -> None:
        """Hand events to this process's subscribers of their sessions."""
        for event in events:
            if isinstance(event, BusEvent):
                for sub in tuple(self._subscribers.get(event.session_id, ())):
                    sub.push(event)

    async def announce_in_transaction(self, db: AsyncSession, event: BusEvent) -> None:
        """Publish a stored event once `db` commits (never if it rolls back): how stored events reach the bus.
        Ephemeral ones (token deltas) are `publish`ed directly."""
        after_commit(db, lambda: self.publish([event]))


class PostgresEventBus(EventBus):
    """Adds LISTEN/NOTIFY so events committed by any process reach this one's subscribers."""

    def __init__(self, database_url: str, queue_size: int = 1000) -> None:
        super().__init__(queue_size)
        self.conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever(), name="event-bus-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener

    async def announce_in_transaction(self, db: AsyncSession, event: BusEvent) -> None:
        await super().announce_in_transaction(db, event)
        # NOTIFY is transactional: other processes hear of the event exactly when it commits.
        await db.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": f"{event.session_id}:{event.seq}"},
        )

    async def _listen_forever(self) -> None:
        import psycopg

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening.set()
                    delay = 0.5
                    async for notice in conn.notifies():
                        self._on_notify(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.listening.clear()
                log.exception("event bus listener lost its connection; reconnecting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _on_notify(self, payload: str) -> None:
        session_part, _, seq_part = payload.partition(":")
        try:
            session_id, seq = uuid.UUID(session_part), int(seq_part)
        except ValueError:
            return
        if session_id in self._subscribers:
            self.publish([BusEvent(session_id, seq)])


def create_bus(database_url: str) -> EventBus:
    if database_url.startswith("postgresql"):
        return PostgresEventBus(database_url)
    return EventBus()
