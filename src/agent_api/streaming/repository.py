"""The queries of the stream routes: stream tickets and where a session's event log stands."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import Session, StreamTicket


async def redeem_ticket(db: AsyncSession, ticket_hash: str, session_id: uuid.UUID, now: datetime) -> uuid.UUID | None:
    """Mark an unused, unexpired ticket of this session used; its user's id, or None."""
    claimed = await db.execute(
        update(StreamTicket)
        .where(
            StreamTicket.ticket_hash == ticket_hash,
            StreamTicket.session_id == session_id,
            StreamTicket.used_at.is_(None),
            StreamTicket.expires_at > now,
        )
        .values(used_at=now)
        .returning(StreamTicket.user_id)
        .execution_options(synchronize_session=False)
    )
    user_id = claimed.scalar()
    return uuid.UUID(str(user_id)) if user_id is not None else None


async def hold_ticket_for_sse(
    db: AsyncSession, ticket_hash: str, session_id: uuid.UUID, now: datetime
) -> uuid.UUID | None:
    """Take an unexpired ticket of this session for Server-Sent Events; its user's id, or None.

    An SSE ticket is recorded as used at its expiry (`used_at = expires_at`), so it opens this session's event
    stream again, for the browser's reconnects, until it expires. A WebSocket's redemption (`redeem_ticket`) records
    a moment before the expiry, so a ticket taken by one kind of stream is refused by the other.
    """
    held = await db.execute(
        update(StreamTicket)
        .where(
            StreamTicket.ticket_hash == ticket_hash,
            StreamTicket.session_id == session_id,
            or_(StreamTicket.used_at.is_(None), StreamTicket.used_at == StreamTicket.expires_at),
            StreamTicket.expires_at > now,
        )
        .values(used_at=StreamTicket.expires_at)
        .returning(StreamTicket.user_id)
        .execution_options(synchronize_session=False)
    )
    user_id = held.scalar()
    return uuid.UUID(str(user_id)) if user_id is not None else None


async def latest_seq(db: AsyncSession, session_id: uuid.UUID) -> int:
    return int(await db.scalar(select(Session.last_seq).where(Session.id == session_id)) or 0)
