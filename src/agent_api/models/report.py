"""Reports: a snapshot of what a session or task execution did, readable after both are gone."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from agent_api.models.base import Base, IdMixin, utcnow
from agent_api.models.session import Money


class Report(IdMixin, Base):
    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Sessions are soft-deleted, so the link normally stays; SET NULL covers a session removed for real.
    session_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"), index=True)
    # No foreign keys: a deleted task must leave its executions' reports readable.
    task_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    task_execution_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))  # completed|failed: whether the work ended without an error
    model: Mapped[str | None] = mapped_column(String(100))
    total_cost_usd: Mapped[float] = mapped_column(Money, default=0)
    total_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    error_message: Mapped[str | None] = mapped_column(Text)
    # The full structured report, as reports/report.schema.json describes it.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
