"""Task definitions: create, change, delete, and the settings a task's session is created with."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.errors import NotFound, ValidationFailed
from agent_api.mcp_servers import service as mcp_service
from agent_api.models import Task, TaskExecution, User
from agent_api.models.base import utcnow
from agent_api.session_templates import service as template_service
from agent_api.session_templates.service import SESSION_FIELDS
from agent_api.sessions.schemas import SessionCreate
from agent_api.tasks import repository as repo
from agent_api.tasks.schedule import next_slot
from agent_api.tasks.schemas import TaskCreate, TaskUpdate

_SIMPLE_FIELDS = (
    "name",
    "description",
    "prompt_template",
    "variables",
    "timeout_seconds",
    "generate_report",
    "report_format",
    "tags",
)
_NOT_NULL = {"name", "prompt_template", "variables", "timeout_seconds", "generate_report", "report_format", "tags"}


async def get_owned(db: AsyncSession, user: User, task_id: uuid.UUID) -> Task:
    task = await repo.get_owned(db, user.id, task_id)
    if task is None:
        raise NotFound("Task not found", code="task_not_found")
    return task


async def get_owned_execution(db: AsyncSession, user: User, execution_id: uuid.UUID) -> TaskExecution:
    execution = await repo.get_owned_execution(db, user.id, execution_id)
    if execution is None:
        raise NotFound("Task execution not found", code="execution_not_found")
    return execution


async def _check_template(db: AsyncSession, user: User, template_id: uuid.UUID | None) -> None:
    if template_id is not None:
        try:
            await template_service.get_visible(db, user, template_id)
        except NotFound:
            raise ValidationFailed(
                "Unknown template", code="template_not_found", details={"template_id": str(template_id)}
            ) from None


def _session_value(field: str, value: Any) -> Any:
    if field == "sdk_options":
        return value.model_dump(exclude_none=True)
    if field == "mcp_server_ids":
        return [str(v) for v in value]
    return value


def reschedule(task: Task) -> None:
    cron = task.schedule_cron if task.is_scheduled else None
    task.next_run_at = next_slot(cron, task.schedule_timezone, utcnow()) if cron else None


async def create(db: AsyncSession, user: User, body: TaskCreate) -> Task:
    await _check_template(db, user, body.template_id)
    await mcp_service.check_attachable(db, user, body.mcp_server_ids)
    task = Task(
        id=uuid.uuid4(),
        user_id=user.id,
        template_id=body.template_id,
        meta=body.metadata,
        schedule_cron=body.schedule_cron,
        schedule_timezone=body.schedule_timezone or "UTC",
        # A cron given without saying otherwise is meant to run.
        schedule_enabled=body.schedule_enabled if body.schedule_enabled is not None else body.schedule_cron is not None,
        overrides=[f for f in SESSION_FIELDS if f in body.model_fields_set],
        **{f: getattr(body, f) for f in _SIMPLE_FIELDS},
        **{f: _session_value(f, getattr(body, f)) for f in SESSION_FIELDS},
    )
    reschedule(task)
    db.add(task)
    await db.flush()
    return task


async def update(db: AsyncSession, user: User, task: Task, body: TaskUpdate) -> Task:
    sent = body.model_fields_set
    nulls = sorted(f for f in sent & _NOT_NULL if getattr(body, f) is None)
    if nulls:
        raise ValidationFailed("These fields cannot be null", code="null_field", details={"fields": nulls})
    if "template_id" in sent:
        await _check_template(db, user, body.template_id)
        task.template_id = body.template_id
    if "mcp_server_ids" in sent:
        await mcp_service.check_attachable(db, user, body.mcp_server_ids)
    for field in _SIMPLE_FIELDS:
        if field in sent:
            setattr(task, field, getattr(body, field))
    for field in SESSION_FIELDS:
        if field in sent:
            setattr(task, field, _session_value(field, getattr(body, field)))
    task.overrides = sorted(set(task.overrides) | (set(SESSION_FIELDS) & sent))
    if "metadata" in sent:
        task.meta = body.metadata or {}
    if "schedule_cron" in sent:
        task.schedule_cron = body.schedule_cron
        if body.schedule_enabled is None and body.schedule_cron is not None:
            task.schedule_enabled = True
    if "schedule_timezone" in sent and body.schedule_timezone is not None:
        task.schedule_timezone = body.schedule_timezone
    if body.schedule_enabled is not None:
        task.schedule_enabled = body.schedule_enabled
    schedule_fields = {"schedule_cron", "schedule_timezone", "schedule_enabled", "is_scheduled"}
    if sent & schedule_fields:
        # Only a changed schedule moves the next run; any other edit leaves overdue slots to the catch-up policy.
        reschedule(task)
    task.updated_at = utcnow()
    await db.flush()
    return task


async def soft_delete(db: AsyncSession, task: Task) -> None:
    task.deleted_at = utcnow()
    task.schedule_enabled = False
    task.next_run_at = None
    await db.flush()


def session_body(task: Task, execution: TaskExecution) -> SessionCreate:
    """The new session of an execution: the task's template, with the settings the task set itself on top."""
    values: dict[str, Any] = {
        f: getattr(task, f) for f in SESSION_FIELDS if not task.template_id or f in task.overrides
    }
    values["name"] = f"{task.name} (task run)"
    values["metadata"] = {"task_id": str(task.id), "task_execution_id": str(execution.id)}
    if task.template_id:
        values["template_id"] = task.template_id
    return SessionCreate.model_validate(values)
