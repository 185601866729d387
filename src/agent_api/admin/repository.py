"""Queries for the admin views. List pages are one count and one row query each, whatever the page size: owner
names, session counts and spend come in by joins, never per row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import AuditEvent, Session, TaskExecution, ToolCall, Turn, User
from agent_api.pagination import PageParams, fetch_page

# --- users -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserFilters:
    search: str | None = None
    role: str | None = None
    is_active: bool | None = None


def _users_statement(filters: UserFilters, month_start: datetime, month_end: datetime) -> Select[User, Any, Any]:
    session_counts = (
        select(Session.user_id, func.count().label("n")).group_by(Session.user_id).subquery("session_counts")
    )
    spend = (
        select(Turn.user_id, func.sum(Turn.cost_usd).label("cost"))
        .where(Turn.created_at >= month_start, Turn.created_at < month_end)
        .group_by(Turn.user_id)
        .subquery("month_spend")
    )
    stmt: Select[User, Any, Any] = (
        select(User, func.coalesce(session_counts.c.n, 0), func.coalesce(spend.c.cost, 0))
        .outerjoin(session_counts, session_counts.c.user_id == User.id)
        .outerjoin(spend, spend.c.user_id == User.id)
    )
    if filters.search:
        term = filters.search.lower()
        stmt = stmt.where(
            or_(
                func.lower(User.username).contains(term, autoescape=True),
                func.lower(User.email).contains(term, autoescape=True),
            )
        )
    if filters.role:
        stmt = stmt.where(User.role == filters.role)
    if filters.is_active is not None:
        stmt = stmt.where(User.is_active == filters.is_active)
    return stmt.order_by(User.created_at, User.username)


async def users_page(
    db: AsyncSession, filters: UserFilters, params: PageParams, month_start: datetime, month_end: datetime
) -> tuple[list[Any], int]:
    stmt = _users_statement(filters, month_start, month_end)
    total = await db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await db.execute(stmt.offset(params.offset).limit(params.page_size))).all()
    return list(rows), int(total or 0)


async def user_row(db: AsyncSession, user_id: uuid.UUID, month_start: datetime, month_end: datetime) -> Any:
    stmt = _users_statement(UserFilters(), month_start, month_end).where(User.id == user_id)
    return (await db.execute(stmt)).first()


async def get_user(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await db.get(User, user_id)


# --- sessions ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFilters:
    user_id: uuid.UUID | None = None
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    cost_above: float | None = None


def _sessions_statement(filters: SessionFilters) -> Select[Session, str]:
    stmt: Select[Session, str] = select(Session, User.username).join(User, User.id == Session.user_id)
    if filters.user_id is not None:
        stmt = stmt.where(Session.user_id == filters.user_id)
    if filters.status:
        stmt = stmt.where(Session.status == filters.status)
    if filters.created_after is not None:
        stmt = stmt.where(Session.created_at >= filters.created_after)
    if filters.created_before is not None:
        stmt = stmt.where(Session.created_at < filters.created_before)
    if filters.cost_above is not None:
        stmt = stmt.where(Session.total_cost_usd > filters.cost_above)
    return stmt


async def sessions_page(
    db: AsyncSession, filters: SessionFilters, params: PageParams, after: tuple[datetime, uuid.UUID] | None
) -> tuple[list[Any], int, bool]:
    """Newest first. With `after` (the last row a client saw) the page starts right after it (keyset), so rows
    created meanwhile neither repeat nor shift the page; without it, `page` counts from the newest. The flag says
    whether more rows follow (one row past the page is read to know)."""
    stmt = _sessions_statement(filters)
    total = await db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    ordered = stmt.order_by(Session.created_at.desc(), Session.id.desc()).limit(params.page_size + 1)
    if after is not None:
        created_at, session_id = after
        ordered = ordered.where(
            or_(Session.created_at < created_at, and_(Session.created_at == created_at, Session.id < session_id))
        )
    else:
        ordered = ordered.offset(params.offset)
    rows = list((await db.execute(ordered)).all())
    return rows[: params.page_size], int(total or 0), len(rows) > params.page_size


# --- stats -------------------------------------------------------------------------------------------------------


async def user_counts(db: AsyncSession) -> tuple[int, int, int]:
    stmt = select(
        func.count(),
        func.count().filter(User.is_active.is_(True)),
        func.count().filter(User.role == "admin"),
    ).select_from(User)
    total, enabled, admins = (await db.execute(stmt)).one()
    return int(total), int(enabled), int(admins)


async def sessions_by_status(db: AsyncSession) -> dict[str, int]:
    rows = (await db.execute(select(Session.status, func.count()).group_by(Session.status))).all()
    return {status: int(n) for status, n in rows}


async def turn_figures(db: AsyncSession, start: datetime, end: datetime) -> dict[str, Any]:
    """Turns, distinct users, tokens and cost of the turns created in [start, end)."""
    stmt = select(
        func.count(Turn.id),
        func.count(func.distinct(Turn.user_id)),
        func.coalesce(func.sum(Turn.input_tokens), 0),
        func.coalesce(func.sum(Turn.output_tokens), 0),
        func.coalesce(func.sum(Turn.cost_usd), 0),
    ).where(Turn.created_at >= start, Turn.created_at < end)
    turns, users, input_tokens, output_tokens, cost = (await db.execute(stmt)).one()
    return {
        "turns": int(turns),
        "active_users": int(users),
        "input_tokens": int(input_tokens),
        "output_tokens": int(output_tokens),
        "cost_usd": float(cost or 0),
    }


async def tool_calls_between(db: AsyncSession, start: datetime, end: datetime) -> int:
    stmt = select(func.count(ToolCall.id)).where(ToolCall.started_at >= start, ToolCall.started_at < end)
    return int(await db.scalar(stmt) or 0)


async def task_executions_by_status(db: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    stmt = (
        select(TaskExecution.status, func.count())
        .where(TaskExecution.created_at >= start, TaskExecution.created_at < end)
        .group_by(TaskExecution.status)
    )
    return {status: int(n) for status, n in (await db.execute(stmt)).all()}


async def top_spenders(db: AsyncSession, start: datetime, end: datetime, limit: int) -> list[Any]:
    cost = func.sum(Turn.cost_usd)
    stmt = (
        select(User.id, User.username, cost, func.count(Turn.id))
        .join(Turn, Turn.user_id == User.id)
        .where(Turn.created_at >= start, Turn.created_at < end)
        .group_by(User.id, User.username)
        .having(cost > 0)
        .order_by(cost.desc(), User.username)
        .limit(limit)
    )
    return list((await db.execute(stmt)).all())


# --- audit -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    action: str | None = None
    actor_id: uuid.UUID | None = None
    target_user_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


async def audit_page(db: AsyncSession, filters: AuditFilters, params: PageParams) -> tuple[list[AuditEvent], int]:
    stmt = select(AuditEvent)
    if filters.action:
        # A trailing ".*" selects a family of actions, e.g. "admin.*".
        if filters.action.endswith(".*"):
            stmt = stmt.where(AuditEvent.action.startswith(filters.action[:-1], autoescape=True))
        else:
            stmt = stmt.where(AuditEvent.action == filters.action)
    if filters.actor_id is not None:
        stmt = stmt.where(AuditEvent.actor_id == filters.actor_id)
    if filters.target_user_id is not None:
        stmt = stmt.where(AuditEvent.target_user_id == filters.target_user_id)
    if filters.since is not None:
        stmt = stmt.where(AuditEvent.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEvent.created_at < filters.until)
    return await fetch_page(db, stmt.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()), params)
