"""Tasks (a prompt template run on demand or on a cron schedule) and their executions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from agent_api.models.base import Base, IdMixin, TimestampMixin, utcnow
from agent_api.models.session import AgentSettingsMixin

EXECUTION_STATUSES = ("pending", "queued", "running", "completed", "failed", "cancelled", "timed_out", "skipped")
FINISHED_STATUSES = ("completed", "failed", "cancelled", "timed_out", "skipped")


class Task(AgentSettingsMixin, IdMixin, TimestampMixin, Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    prompt_template: Mapped[str] = mapped_column(Text)
    # Defaults for the prompt's variables; scheduled runs use them, `execute` may override them.
    variables: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    template_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("session_templates.id", ondelete="SET NULL"))
    # Which session fields the task itself set; the rest come from its template.
    overrides: Mapped[list[str]] = mapped_column(JSON, default=list)
    schedule_cron: Mapped[str | None] = mapped_column(String(120))
    schedule_timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    schedule_enabled: Mapped[bool] = mapped_column(default=False)
    next_run_at: Mapped[datetime | None] = mapped_column(index=True)
    last_run_at: Mapped[datetime | None]
    timeout_seconds: Mapped[int] = mapped_column(default=600)
    generate_report: Mapped[bool] = mapped_column(default=True)
    report_format: Mapped[str] = mapped_column(String(8), default="html")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    execution_count: Mapped[int] = mapped_column(default=0)
    # Soft delete: the schedule stops; executions and reports stay readable.
    deleted_at: Mapped[datetime | None]

    @property
    def is_scheduled(self) -> bool:
        return bool(self.schedule_cron) and self.schedule_enabled


class TaskExecution(IdMixin, Base):
    __tablename__ = "task_executions"
    # One execution per (task, slot): two schedulers, or a restart, never run a slot twice.
    # Manual runs have no slot, and NULLs never collide.
    __table_args__ = (
        UniqueConstraint("task_id", "scheduled_for", name="uq_task_executions_task_id_scheduled_for"),
        Index("ix_task_executions_task_id_created_at", "task_id", "created_at"),
    )

    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    trigger_type: Mapped[str] = mapped_column(String(16), default="manual")  # manual|scheduled|api
    scheduled_for: Mapped[datetime | None]
    variables: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    prompt: Mapped[str] = mapped_column(Text)
    session_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"))
    report_id: Mapped[uuid.UUID | None]
    result_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    total_cost_usd: Mapped[float] = mapped_column(Numeric(14, 6, asdecimal=False), default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
