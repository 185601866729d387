"""Report queries, each starting from a statement scoped to the owner, and the bounded reads of a session's history."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import Message, Report, ToolCall, Turn
from agent_api.reports.schemas import ReportFilters

Row = TypeVar("Row", Message, ToolCall)


def owned_reports(user_id: uuid.UUID) -> Select[Report]:
    return select(Report).where(Report.user_id == user_id)


async def get_owned(db: AsyncSession, user_id: uuid.UUID, report_id: uuid.UUID) -> Report | None:
    return (await db.scalars(owned_reports(user_id).where(Report.id == report_id))).first()


def list_owned(user_id: uuid.UUID, filters: ReportFilters) -> Select[Report]:
    stmt = owned_reports(user_id)
    if filters.session_id is not None:
        stmt = stmt.where(Report.session_id == filters.session_id)
    if filters.task_id is not None:
        stmt = stmt.where(Report.task_id == filters.task_id)
    if filters.task_execution_id is not None:
        stmt = stmt.where(Report.task_execution_id == filters.task_execution_id)
    if filters.source == "session":
        stmt = stmt.where(Report.task_execution_id.is_(None))
    elif filters.source == "task_execution":
        stmt = stmt.where(Report.task_execution_id.is_not(None))
    if filters.created_after is not None:
        stmt = stmt.where(Report.created_at >= filters.created_after)
    if filters.created_before is not None:
        stmt = stmt.where(Report.created_at < filters.created_before)
    return stmt.order_by(Report.created_at.desc(), Report.id.desc())


def _text_messages(session_id: uuid.UUID) -> Select[Message]:
    # Tool results arrive as user messages without text; the timeline shows them through their tool call.
    return (
        select(Message)
        .where(Message.session_id == session_id, Message.text.is_not(None), Message.text != "")
        .order_by(Message.created_at, Message.id)
    )


async def _count(db: AsyncSession, stmt: Select[Any]) -> int:
    return int(await db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0)


async def _head_and_tail(db: AsyncSession, stmt: Select[Row], keep: int, *newest_first: Any) -> tuple[list[Row], int]:
    """The first and last `keep` rows of an ordered statement (all of them when there are few), and the count."""
    total = await _count(db, stmt)
    head = list((await db.scalars(stmt.limit(keep))).all())
    if total <= keep:
        return head, total
    tail = list((await db.scalars(stmt.order_by(None).order_by(*newest_first).limit(keep))).all())
    seen = {row.id for row in head}
    return head + [row for row in reversed(tail) if row.id not in seen], total


async def timeline_rows(
    db: AsyncSession, session_id: uuid.UUID, keep: int
) -> tuple[list[Message], list[ToolCall], int]:
    """Enough messages and tool calls to build the first and last `keep` timeline entries, and the entry count.

    The overall first `keep` entries are among the first `keep` of each kind, and likewise for the last ones.
    """
    messages, n_messages = await _head_and_tail(
        db, _text_messages(session_id), keep, Message.created_at.desc(), Message.id.desc()
    )
    calls, n_calls = await _head_and_tail(
        db,
        select(ToolCall).where(ToolCall.session_id == session_id).order_by(ToolCall.started_at, ToolCall.id),
        keep,
        ToolCall.started_at.desc(),
        ToolCall.id.desc(),
    )
    return messages, calls, n_messages + n_calls


async def first_user_text(db: AsyncSession, session_id: uuid.UUID) -> str | None:
    stmt = _text_messages(session_id).where(Message.role == "user").limit(1)
    message = (await db.scalars(stmt)).first()
    return message.text if message is not None else None


async def turns_of(db: AsyncSession, session_id: uuid.UUID) -> list[Turn]:
    stmt = select(Turn).where(Turn.session_id == session_id).order_by(Turn.created_at, Turn.id)
    return list((await db.scalars(stmt)).all())
