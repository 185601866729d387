"""Session templates: a reusable session set-up, shareable with other users or everyone."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from agent_api.models.base import Base, IdMixin, TimestampMixin
from agent_api.models.session import AgentSettingsMixin


class SessionTemplate(AgentSettingsMixin, IdMixin, TimestampMixin, Base):
    __tablename__ = "session_templates"
    __table_args__ = (Index("ix_session_templates_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(32), default="custom", index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    initial_message: Mapped[str | None] = mapped_column(Text)
    # [{"path": relative path, "content": text}], written into a new session's working directory.
    seed_files: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    is_public: Mapped[bool] = mapped_column(default=False, index=True)
    usage_count: Mapped[int] = mapped_column(default=0)
    last_used_at: Mapped[datetime | None]
    # Soft delete: hidden from lists and lookups, kept for the sessions created from it.
    deleted_at: Mapped[datetime | None]


class TemplateShare(Base):
    __tablename__ = "session_template_shares"

    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("session_templates.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
