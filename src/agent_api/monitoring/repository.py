"""Queries for budgets, costs and session metrics. Costs come only from the per-turn rows (`turns`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Date, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import Message, PermissionRequest, Session, TaskExecution, ToolCall, Turn, User

IN_FLIGHT = ("queued", "running")
FINISHED = ("completed", "failed", "interrupted")


async def lock_user_budget(db: AsyncSession, user_id: uuid.UUID) -> float | None:
    """The user's own budget, with their row locked until the transaction ends (a no-op on SQLite, whose write
    transactions are already serialized)."""
    # key_share=True renders FOR NO KEY UPDATE: it serializes budget checks without blocking inserts whose
    # foreign keys point at the user (those take KEY SHARE locks, which FOR UPDATE would conflict with).
    stmt = select(User.monthly_budget_usd).where(User.id == user_id).with_for_update(key_share=True)
    return (await db.execute(stmt)).scalar_one_or_none()


def _in_period(user_id: uuid.UUID, start: datetime, end: datetime) -> Any:
    return (Turn.user_id == user_id) & (Turn.created_at >= start) & (Turn.created_at < end)


async def spend_between(db: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime) -> float:
    stmt = select(func.coalesce(func.sum(Turn.cost_usd), 0)).where(_in_period(user_id, start, end))
    return float(await db.scalar(stmt) or 0)


async def spend_and_average_turn(
    db: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime
) -> tuple[float, float]:
    """The spend in [start, end) and the average cost of a finished turn in it (0 with none)."""
    finished_cost = func.sum(Turn.cost_usd).filter(Turn.status.in_(FINISHED))
    finished = func.count().filter(Turn.status.in_(FINISHED))
    stmt = select(func.coalesce(func.sum(Turn.cost_usd), 0), finished_cost, finished).where(
        _in_period(user_id, start, end)
    )
    total, cost_of_finished, count = (await db.execute(stmt)).one()
    average = float(cost_of_finished or 0) / count if count else 0.0
    return float(total or 0), average


async def turns_in_flight(db: AsyncSession, user_id: uuid.UUID, exclude: uuid.UUID | None = None) -> int:
    """Turns queued or running, plus task executions accepted but not yet at their turn (each will run one)."""
    stmt = select(func.count()).where(Turn.user_id == user_id, Turn.status.in_(IN_FLIGHT))
    if exclude is not None:
        stmt = stmt.where(Turn.id != exclude)
    waiting = select(func.count()).where(
        TaskExecution.user_id == user_id,
        TaskExecution.status.in_(("pending", "queued")),
        TaskExecution.session_id.is_(None),
    )
    return int(await db.scalar(stmt) or 0) + int(await db.scalar(waiting) or 0)


# --- costs -------------------------------------------------------------------------------------------------------


async def cost_totals(db: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime) -> dict[str, Any]:
    where = _in_period(user_id, start, end)
    stmt = select(
        func.coalesce(func.sum(Turn.cost_usd), 0),
        func.count(Turn.id),
        func.count(func.distinct(Turn.session_id)),
        func.coalesce(func.sum(Turn.input_tokens), 0),
        func.coalesce(func.sum(Turn.output_tokens), 0),
    ).where(where)
    cost, turns, sessions, input_tokens, output_tokens = (await db.execute(stmt)).one()
    tool_calls = await db.scalar(select(func.count(ToolCall.id)).join(Turn, Turn.id == ToolCall.turn_id).where(where))
    return {
        "total_cost_usd": float(cost or 0),
        "turns": int(turns or 0),
        "sessions": int(sessions or 0),
        "input_tokens": int(input_tokens or 0),
        "output_tokens": int(output_tokens or 0),
        "tool_calls": int(tool_calls or 0),
    }


async def message_count(db: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime) -> int:
    stmt = select(func.count(Message.id)).join(Turn, Turn.id == Message.turn_id).where(_in_period(user_id, start, end))
    return int(await db.scalar(stmt) or 0)


async def cost_by_day(db: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    # SQLite stores UTC text; PostgreSQL would cast in the connection's time zone, so name UTC explicitly.
    if db.get_bind().dialect.name == "sqlite":
        day: Any = func.date(Turn.created_at)
    else:
        day = cast(func.timezone("UTC", Turn.created_at), Date)
    stmt = select(day.label("day"), *_sums()).where(_in_period(user_id, start, end)).group_by(day).order_by(day)
    return [tuple(r) for r in (await db.execute(stmt)).all()]


async def cost_by_session(
    db: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    stmt = (
        select(Turn.session_id, Session.name, *_sums())
        .join(Session, Session.id == Turn.session_id)
        .where(_in_period(user_id, start, end))
        .group_by(Turn.session_id, Session.name)
        .order_by(func.sum(Turn.cost_usd).desc(), Turn.session_id)
    )
    return [tuple(r) for r in (await db.execute(stmt)).all()]


async def turns_with_model_usage(
    db: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    stmt = select(Turn.cost_usd, Turn.input_tokens, Turn.output_tokens, Turn.model_usage).where(
        _in_period(user_id, start, end)
    )
    return [tuple(r) for r in (await db.execute(stmt)).all()]


def _sums() -> list[Any]:
    return [
        func.coalesce(func.sum(Turn.cost_usd), 0),
        func.count(Turn.id),
        func.coalesce(func.sum(Turn.input_tokens), 0),
        func.coalesce(func.sum(Turn.output_tokens), 0),
    ]


async def get_user(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await db.get(User, user_id)


# --- system-wide gauges and session metrics ------------------------------------------------------------------


async def sessions_by_status(db: AsyncSession) -> dict[str, int]:
    rows = (await db.execute(select(Session.status, func.count()).group_by(Session.status))).all()
    return {status: int(n) for status, n in rows}


async def task_executions_by_status(db: AsyncSession) -> dict[str, int]:
    stmt = select(TaskExecution.status, func.count()).group_by(TaskExecution.status)
    return {status: int(n) for status, n in (await db.execute(stmt)).all()}


async def get_session(db: AsyncSession, session_id: uuid.UUID) -> Session | None:
    return await db.get(Session, session_id)


async def turn_durations_ms(db: AsyncSession, session_id: uuid.UUID) -> list[float]:
    """Wall-clock durations of the session's finished turns, from the SDK's figure when it reported one."""
    stmt = select(Turn.duration_ms, Turn.started_at, Turn.finished_at).where(
        Turn.session_id == session_id, Turn.finished_at.is_not(None)
    )
    durations = []
    for reported, started, finished in (await db.execute(stmt)).all():
        if reported is not None:
            durations.append(float(reported))
        elif started is not None and finished is not None:
            durations.append((finished - started).total_seconds() * 1000)
    return durations


async def tool_call_durations_ms(db: AsyncSession, session_id: uuid.UUID) -> list[tuple[str, float]]:
    stmt = select(ToolCall.name, ToolCall.duration_ms).where(
        ToolCall.session_id == session_id, ToolCall.duration_ms.is_not(None)
    )
    return [(name, float(ms or 0)) for name, ms in (await db.execute(stmt)).all()]


async def tool_counts(
    db: AsyncSession, session_id: uuid.UUID, turn_id: uuid.UUID | None = None
) -> tuple[dict[str, int], int]:
    """Tool calls by tool name, and how many failed; for the session or one of its turns."""
    stmt = select(ToolCall.name, func.count(), func.sum(case((ToolCall.is_error, 1), else_=0))).where(
        ToolCall.session_id == session_id
    )
    if turn_id is not None:
        stmt = stmt.where(ToolCall.turn_id == turn_id)
    rows = (await db.execute(stmt.group_by(ToolCall.name))).all()
    return {name: int(n) for name, n, _ in rows}, sum(int(e or 0) for _, _, e in rows)


async def pending_permission_count(db: AsyncSession, session_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(PermissionRequest.session_id == session_id, PermissionRequest.decision.is_(None))
    return int(await db.scalar(stmt) or 0)
