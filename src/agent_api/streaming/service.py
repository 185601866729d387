"""Stream tickets, frames, and the per-subscriber event stream: replay from the log, then live, no gap, no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import event_log
from agent_api.bus import BusEvent, Subscription
from agent_api.models import Session, StreamTicket, User
from agent_api.models.base import utcnow
from agent_api.sessions import service as sessions_service
from agent_api.state import AppState
from agent_api.streaming import repository as repo

TICKET_TTL_S = 30
CATCH_UP_BATCH = 2000
LIVE_BATCH = 200
_WAKE_UP = BusEvent(uuid.UUID(int=0), None)  # put in a stopped stream's inbox so a waiting reader sees the stop


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue_ticket(db: AsyncSession, user: User, session: Session) -> tuple[str, datetime]:
    ticket = "wst_" + secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(seconds=TICKET_TTL_S)
    db.add(
        StreamTicket(ticket_hash=_ticket_hash(ticket), user_id=user.id, session_id=session.id, expires_at=expires_at)
    )
    await db.flush()
    return ticket, expires_at


async def redeem_ticket(db: AsyncSession, ticket: str, session_id: uuid.UUID) -> User | None:
    """The ticket's user, once (a WebSocket's): a used, expired or other-session ticket gives None."""
    user_id = await repo.redeem_ticket(db, _ticket_hash(ticket), session_id, utcnow())
    return await _active_user(db, user_id)


async def redeem_ticket_for_sse(db: AsyncSession, ticket: str, session_id: uuid.UUID) -> User | None:
    """The ticket's user for an event stream (Server-Sent Events), or None. Unlike a WebSocket's, the ticket keeps
    opening this session's event stream until it expires: a browser's EventSource reconnects with the URL it was
    given. A ticket a WebSocket used, an expired one or another session's gives None."""
    user_id = await repo.hold_ticket_for_sse(db, _ticket_hash(ticket), session_id, utcnow())
    return await _active_user(db, user_id)


async def _active_user(db: AsyncSession, user_id: uuid.UUID | None) -> User | None:
    if user_id is None:
        return None
    user = await db.get(User, user_id)
    return user if user is not None and user.is_active else None


async def connected_data(state: AppState, session_id: uuid.UUID) -> tuple[dict[str, Any], int]:
    async with state.db.transaction(readonly=True) as db:
        s = await sessions_service.get_session(db, session_id)
        pending = await sessions_service.pending_permissions(db, session_id)
        assert s is not None
        data = {
            "status": s.status,
            "latest_seq": s.last_seq,
            "pending_permission_requests": [
                {
                    "request_id": str(p.id),
                    "tool": p.tool_name,
                    "input": p.input_summary,
                    "tool_use_id": p.tool_use_id,
                    "created_at": p.created_at.isoformat(),
                }
                for p in pending
            ],
        }
        return data, s.last_seq


class EventStream:
    """What one subscriber sees: every persisted event after `after`, in seq order, each once.

    Live events arrive in memory through the bus; whenever that path cannot prove continuity (a gap, an
    overflowed inbox, news from another process) the stream reads the missing rows from the table.
    """

    def __init__(self, state: AppState, subscription: Subscription, after: int) -> None:
        self.state = state
        self.sub = subscription
        self.last = after
        self._catch_up = True  # subscribed first, then read: nothing committed in between is missed
        self._stopped = False

    def stop(self) -> None:
        """End the stream: `next_batch` answers None from now on, also when it is waiting right now."""
        self._stopped = True
        # Wake a waiting `next_batch`; a full inbox means it is not waiting, and it checks the flag before it does.
        with contextlib.suppress(asyncio.QueueFull):
            self.sub.queue.put_nowait(_WAKE_UP)

    async def _read_log(self) -> list[BusEvent]:
        async with self.state.db.transaction(readonly=True) as db:
            stmt = event_log.events_after(self.sub.session_id, self.last, CATCH_UP_BATCH)
            rows = (await db.execute(stmt)).all()
        if len(rows) < CATCH_UP_BATCH:
            self._catch_up = False
        events = [BusEvent(*row) for row in rows]
        if events:
            self.last = events[-1].seq  # type: ignore[assignment]
        return events

    async def next_batch(self, idle_s: float | None = None) -> list[BusEvent] | None:
        """The next events to send, or None when nothing happened within `idle_s` (when given) or the stream was
        stopped."""
        while True:
            if self._stopped:
                return None
            if self.sub.overflowed:
                self.sub.overflowed = False
                self._drain()
                self._catch_up = True
            if self._catch_up:
                events = await self._read_log()
                if events:
                    return events
                continue
            if idle_s is None:
                first = await self.sub.queue.get()  # no timer on the hot path; the connection keeps time
            else:
                try:
                    async with asyncio.timeout(idle_s):
                        first = await self.sub.queue.get()
                except TimeoutError:
                    return None
            batch = [first]
            while len(batch) < LIVE_BATCH and not self.sub.queue.empty():
                batch.append(self.sub.queue.get_nowait())
            if self._stopped:  # the batch may hold the wake-up call, which is no event
                return None
            out = self._accept(batch)
            if out:
                return out

    def _accept(self, batch: list[BusEvent]) -> list[BusEvent]:
        out: list[BusEvent] = []
        for event in batch:
            if event.seq is None:
                out.append(event)
            elif event.seq <= self.last:
                continue
            elif event.seq == self.last + 1 and event.data is not None:
                out.append(event)
                self.last = event.seq
            else:
                self._catch_up = True
                break
        return out

    def _drain(self) -> None:
        while not self.sub.queue.empty():
            self.sub.queue.get_nowait()


async def latest_seq(db: AsyncSession, session_id: uuid.UUID) -> int:
    return await repo.latest_seq(db, session_id)
