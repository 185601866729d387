"""Task and execution queries. User-facing ones start from a statement scoped to the owner."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, cast, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import Task, TaskExecution


def owned_tasks(user_id: uuid.UUID) -> Select[Task]:
    return select(Task).where(Task.user_id == user_id, Task.deleted_at.is_(None))


async def get_owned(db: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID) -> Task | None:
    return (await db.scalars(owned_tasks(user_id).where(Task.id == task_id))).first()


def list_owned(user_id: uuid.UUID, *, is_scheduled: bool | None, tag: str | None, search: str | None) -> Select[Task]:
    stmt = owned_tasks(user_id)
    if is_scheduled is True:
        stmt = stmt.where(Task.schedule_cron.is_not(None), Task.schedule_enabled.is_(True))
    elif is_scheduled is False:
        stmt = stmt.where((Task.schedule_cron.is_(None)) | (Task.schedule_enabled.is_(False)))
    if tag:
        stmt = stmt.where(cast(Task.tags, String).contains(f'"{tag}"', autoescape=True))
    if search:
        stmt = stmt.where(Task.name.icontains(search, autoescape=True))
    return stmt.order_by(Task.created_at.desc(), Task.id)


def owned_executions(user_id: uuid.UUID) -> Select[TaskExecution]:
    # Executions of deleted tasks stay readable: scoped by owner only.
    return select(TaskExecution).where(TaskExecution.user_id == user_id)


async def get_owned_execution(db: AsyncSession, user_id: uuid.UUID, execution_id: uuid.UUID) -> TaskExecution | None:
    return (await db.scalars(owned_executions(user_id).where(TaskExecution.id == execution_id))).first()


def executions_of(user_id: uuid.UUID, task_id: uuid.UUID, status: str | None) -> Select[TaskExecution]:
    stmt = owned_executions(user_id).where(TaskExecution.task_id == task_id)
    if status:
        stmt = stmt.where(TaskExecution.status == status)
    return stmt.order_by(TaskExecution.created_at.desc(), TaskExecution.id.desc())


async def due_task_ids(db: AsyncSession, now: datetime) -> list[uuid.UUID]:
    stmt = (
        select(Task.id)
        .where(
            Task.deleted_at.is_(None),
            Task.schedule_enabled.is_(True),
            Task.schedule_cron.is_not(None),
            Task.next_run_at <= now,
        )
        .order_by(Task.next_run_at)
        .limit(500)
    )
    return list((await db.scalars(stmt)).all())


async def insert_slot(db: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert an execution for a (task, slot) unless one exists: true only for the caller whose row went in."""
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(TaskExecution)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["task_id", "scheduled_for"])
        .returning(TaskExecution.id)
    )
    return (await db.execute(stmt)).scalar_one_or_none() is not None


async def advance_schedule(
    db: AsyncSession, task_id: uuid.UUID, expected_next: datetime, next_run_at: datetime, last_run_at: datetime
) -> bool:
    """Compare-and-set on next_run_at, so two schedulers never both move a task's schedule."""
    result = await db.execute(
        update(Task)
        .where(Task.id == task_id, Task.next_run_at == expected_next)
        .values(next_run_at=next_run_at, last_run_at=last_run_at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def unfinished_executions(db: AsyncSession) -> list[TaskExecution]:
    stmt = select(TaskExecution).where(TaskExecution.status.in_(("pending", "queued", "running")))
    return list((await db.scalars(stmt)).all())


async def count_execution(db: AsyncSession, task_id: uuid.UUID) -> None:
    await db.execute(
        update(Task)
        .where(Task.id == task_id)
        .values(execution_count=Task.execution_count + 1)
        .execution_options(synchronize_session=False)
    )


async def claim_queued(db: AsyncSession, execution_id: uuid.UUID, now: datetime) -> bool:
    """queued -> running, for exactly one caller; false when it was cancelled (or started) first."""
    stmt = (
        update(TaskExecution)
        .where(TaskExecution.id == execution_id, TaskExecution.status == "queued")
        .values(status="running", started_at=now)
        .returning(TaskExecution.id)
        .execution_options(synchronize_session=False)
    )
    return (await db.execute(stmt)).scalar_one_or_none() is not None


async def cancel_unfinished(db: AsyncSession, execution_id: uuid.UUID) -> bool:
    stmt = (
        update(TaskExecution)
        .where(TaskExecution.id == execution_id, TaskExecution.status.in_(("pending", "queued", "running")))
        .values(status="cancelled")
        .returning(TaskExecution.id)
        .execution_options(synchronize_session=False)
    )
    return (await db.execute(stmt)).scalar_one_or_none() is not None
