"""The queries of a turn's life: its row, the rows it writes, and the session counters it moves."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import PermissionRequest, Session, ToolCall, Turn, User
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


async def decide_permission(
    db: AsyncSession, request_id: uuid.UUID, decision: str, decided_by: str, reason: str
) -> bool:
    """Compare-and-set on a pending request: true for exactly one of the answers that race for it (a person's,
    the timeout, the end of the turn)."""
    claimed = await db.execute(
        update(PermissionRequest)
        .where(PermissionRequest.id == request_id, PermissionRequest.decision.is_(None))
        .values(decision=decision, decided_by=decided_by, reason=reason, decided_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


async def timed_out_denials(db: AsyncSession, turn_id: uuid.UUID) -> list[PermissionRequest]:
    stmt = (
        select(PermissionRequest)
        .where(
            PermissionRequest.turn_id == turn_id,
            PermissionRequest.decided_by == "timeout",
            PermissionRequest.decision == "deny",
        )
        .order_by(PermissionRequest.created_at)
    )
    return list((await db.scalars(stmt)).all())


async def deny_pending(db: AsyncSession, session_id: uuid.UUID, decided_by: str, reason: str) -> None:
    await db.execute(
        update(PermissionRequest)
        .where(PermissionRequest.session_id == session_id, PermissionRequest.decision.is_(None))
        .values(decision="deny", decided_by=decided_by, reason=reason, decided_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def lock_user(db: AsyncSession, user_id: uuid.UUID) -> None:
    """The user's row, locked FOR NO KEY UPDATE (inserts referring to the user never wait on it). Taken before
    the session's, in the order a query's budget check takes them: the other order deadlocks on PostgreSQL."""
    await db.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))


async def add_user_totals(
    db: AsyncSession, user_id: uuid.UUID, cost: float, input_tokens: int, output_tokens: int
) -> None:
    await db.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            total_cost_usd=User.total_cost_usd + cost,
            total_input_tokens=User.total_input_tokens + input_tokens,
            total_output_tokens=User.total_output_tokens + output_tokens,
        )
        .execution_options(synchronize_session=False)
    )


async def set_session_fields(db: AsyncSession, session_id: uuid.UUID, **values: Any) -> None:
    await db.execute(
        update(Session).where(Session.id == session_id).values(**values).execution_options(synchronize_session=False)
    )
