"""The queries of a turn's life: its row, the rows it writes, and the session counters it moves."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import PermissionRequest, Session, ToolCall, Turn
from agent_api.models.base import utcnow


async def get_session(db: AsyncSession, session_id: uuid.UUID) -> Session | None:
    return await db.get(Session, session_id)


async def pending_permissions(db: AsyncSession, session_id: uuid.UUID) -> list[PermissionRequest]:
    stmt = select(PermissionRequest).where(
        PermissionRequest.session_id == session_id, PermissionRequest.decision.is_(None)
    )
    return list((await db.scalars(stmt)).all())


async def get_turn(db: AsyncSession, turn_id: uuid.UUID) -> Turn | None:
    return await db.get(Turn, turn_id)


async def add_totals(db: AsyncSession, session_id: uuid.UUID, **increments: Any) -> None:
    values = {name: getattr(Session, name) + amount for name, amount in increments.items() if amount}
    if values:
        await db.execute(
            update(Session)
            .where(Session.id == session_id)
            .values(**values, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def get_tool_call(db: AsyncSession, session_id: uuid.UUID, tool_use_id: str) -> ToolCall | None:
    stmt = select(ToolCall).where(ToolCall.session_id == session_id, ToolCall.tool_use_id == tool_use_id)
    return (await db.scalars(stmt)).first()


async def billed_turns(db: AsyncSession, session_id: uuid.UUID, limit: int = 50) -> list[tuple[float, Any]]:
    """(cost, usage) of the session's latest turns billed from the CLI's own figures."""
    stmt = (
        select(Turn.cost_usd, Turn.usage)
        .where(Turn.session_id == session_id, Turn.cost_estimated.is_(False), Turn.cost_usd > 0)
        .order_by(Turn.created_at.desc())
        .limit(limit)
    )
    return [(float(cost), usage) for cost, usage in (await db.execute(stmt)).all()]


async def session_model(db: AsyncSession, session_id: uuid.UUID) -> str | None:
    return await db.scalar(select(Session.model).where(Session.id == session_id))


async def set_turn_usage(db: AsyncSession, turn_id: uuid.UUID, usage: dict[str, int]) -> None:
    await db.execute(
        update(Turn).where(Turn.id == turn_id).values(usage=usage).execution_options(synchronize_session=False)
    )


async def running_turns(db: AsyncSession) -> list[Turn]:
    return list((await db.scalars(select(Turn).where(Turn.status.in_(("queued", "running"))))).all())
