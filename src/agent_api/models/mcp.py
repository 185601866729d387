"""Registered MCP servers: the tools users plug into their agents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from agent_api.models.base import Base, IdMixin, TimestampMixin


class McpServer(IdMixin, TimestampMixin, Base):
    __tablename__ = "mcp_servers"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    server_type: Mapped[str] = mapped_column(String(8))  # stdio|http|sse
    # The config as clients see it: secret values (env, headers) are stored here as "***" only.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Fernet token of {"env": {...}, "headers": {...}}; the real secret values.
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    is_enabled: Mapped[bool] = mapped_column(default=True)
    is_global: Mapped[bool] = mapped_column(default=False, index=True)
    health_status: Mapped[str] = mapped_column(String(16), default="unknown")  # unknown|healthy|unhealthy
    last_health_check_at: Mapped[datetime | None]
    # The last health-check result without the tool list: latency, server info, protocol version, error.
    last_health: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
