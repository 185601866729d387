"""The session event log: every event a row with a gap-free `seq`, written in the transaction of the state it reports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import webhook_outbox
from agent_api.bus import BusEvent
from agent_api.models import Message, Session, SessionEvent, StatusChange
from agent_api.models.base import utcnow


async def next_seq(db: AsyncSession, session_id: uuid.UUID) -> int:
    """The session row is the sequence: incrementing it takes the row's write lock, so seq is gap-free."""
    seq = await db.scalar(
        update(Session)
        .where(Session.id == session_id)
        .values(last_seq=Session.last_seq + 1)
        .returning(Session.last_seq)
        .execution_options(synchronize_session=False)
    )
    if seq is None:
        raise LookupError(f"session {session_id} does not exist")
    return int(seq)


async def claim_status(db: AsyncSession, session_id: uuid.UUID, allowed_from: tuple[str, ...], to: str) -> bool:
    """Compare-and-set on the status: true for exactly one of several concurrent callers."""
    result = await db.execute(
        update(Session)
        .where(Session.id == session_id, Session.status.in_(allowed_from))
        .values(status=to, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def append_event(db: AsyncSession, session_id: uuid.UUID, type_: str, data: dict[str, Any]) -> SessionEvent:
    seq = await next_seq(db, session_id)
    event = SessionEvent(session_id=session_id, seq=seq, type=type_, data=data, created_at=utcnow())
    db.add(event)
    await db.flush()
    bus = db.info.get("bus")
    if bus is not None:
        await bus.announce_in_transaction(db, BusEvent(session_id, seq, type_, data, event.created_at))
    webhook_event = webhook_outbox.from_session_event(session_id, type_, data)
    if webhook_event is not None:
        await webhook_outbox.emit_for_session(db, session_id, *webhook_event)
    return event


def message_payload(m: Message) -> dict[str, Any]:
    """The data of a `message` event."""
    return {
        "message_id": str(m.id),
        "turn_id": str(m.turn_id) if m.turn_id else None,
        "role": m.role,
        "content": m.content,
        "text": m.text,
        "model": m.model,
    }


async def change_status(db: AsyncSession, session: Session, to: str, reason: str | None = None) -> None:
    """Set the status on a loaded row, record the change and its event."""
    previous = session.status
    if previous == to:
        return
    session.status = to
    session.updated_at = utcnow()
    await record_status_change(db, session.id, previous, to, reason)


async def record_status_change(
    db: AsyncSession, session_id: uuid.UUID, previous: str | None, to: str, reason: str | None
) -> None:
    db.add(StatusChange(session_id=session_id, from_status=previous, to_status=to, reason=reason, created_at=utcnow()))
    await append_event(db, session_id, "status_change", {"from": previous, "status": to, "reason": reason})


async def claim_and_record(
    db: AsyncSession, session_id: uuid.UUID, allowed_from: tuple[str, ...], to: str, reason: str | None
) -> str | None:
    """Compare-and-set the status; on success record it and return the previous status, else None.

    Retried when another writer changed the status between our read and our update (the agent's warm-up moving
    `created` to `connecting` while a query arrives, say), as long as the new status is still one we may leave.
    """
    for _ in range(5):
        current = await db.scalar(select(Session.status).where(Session.id == session_id))
        if current is None or current not in allowed_from:
            return None
        if await claim_status(db, session_id, (current,), to):
            await record_status_change(db, session_id, current, to, reason)
            return str(current)
    return None


def events_after(
    session_id: uuid.UUID, after_seq: int, limit: int = 500
) -> Select[tuple[uuid.UUID, int, str, dict[str, Any], datetime]]:
    """Plain rows, not ORM objects: a replay reads thousands and only turns them into frames."""
    return (
        select(SessionEvent.session_id, SessionEvent.seq, SessionEvent.type, SessionEvent.data, SessionEvent.created_at)
        .where(SessionEvent.session_id == session_id, SessionEvent.seq > after_seq)
        .order_by(SessionEvent.seq)
        .limit(limit)
    )
