"""Agent sessions and everything a turn leaves behind: messages, tool calls, decisions, hook runs, metrics, events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from agent_api.models.base import Base, IdMixin, TimestampMixin, utcnow

# Six decimal places: sub-cent turn costs add up exactly.
Money = Numeric(14, 6, asdecimal=False)


class AgentSettingsMixin:
    """How an agent is set up: what a session runs with, and what a template or a task gives a new session."""

    system_prompt: Mapped[str | None] = mapped_column(Text)
    allowed_tools: Mapped[list[str]] = mapped_column(JSON, default=list)
    disallowed_tools: Mapped[list[str]] = mapped_column(JSON, default=list)
    blocked_commands: Mapped[list[str]] = mapped_column(JSON, default=list)
    permission_mode: Mapped[str] = mapped_column(String(32), default="default")
    # Null: the server's `permission_timeout_s`, and deny.
    permission_timeout_s: Mapped[float | None] = mapped_column()
    on_permission_timeout: Mapped[str | None] = mapped_column(String(8))
    sdk_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    mcp_server_ids: Mapped[list[str]] = mapped_column(JSON, default=list)


class Session(AgentSettingsMixin, IdMixin, TimestampMixin, Base):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_user_id_created_at", "user_id", "created_at"),
        Index("ix_sessions_user_id_status", "user_id", "status"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="created", index=True)
    template_id: Mapped[uuid.UUID | None]
    # Each attached MCP server's connection status as the agent's last init message reported it ([{name, status}]).
    mcp_status: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    parent_session_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"))
    is_fork: Mapped[bool] = mapped_column(default=False)
    # The SDK's own id for the conversation: what `resume=` takes.
    sdk_session_id: Mapped[str | None] = mapped_column(String(64))
    # Fork bookkeeping: the parent conversation to branch from on the first turn, and where.
    fork_from_sdk_session_id: Mapped[str | None] = mapped_column(String(64))
    fork_at_message_uuid: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(100))
    message_count: Mapped[int] = mapped_column(default=0)
    tool_call_count: Mapped[int] = mapped_column(default=0)
    turn_count: Mapped[int] = mapped_column(default=0)
    total_cost_usd: Mapped[float] = mapped_column(Money, default=0)
    total_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_cache_creation_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)


class StatusChange(IdMixin, Base):
    __tablename__ = "session_status_changes"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Turn(IdMixin, Base):
    __tablename__ = "turns"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|completed|failed|interrupted
    result: Mapped[str | None] = mapped_column(Text)
    is_error: Mapped[bool] = mapped_column(default=False)
    cost_usd: Mapped[float] = mapped_column(Money, default=0)
    # True when the turn ended without the CLI's result (interrupted, crashed): priced from the usage seen so far.
    cost_estimated: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The CLI's usage for the turn; while it runs, the sum of its model calls so far.
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    num_turns: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    duration_api_ms: Mapped[int | None] = mapped_column(Integer)
    stop_reason: Mapped[str | None] = mapped_column(String(64))
    errors: Mapped[list[str] | None] = mapped_column(JSON)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Message(IdMixin, Base):
    __tablename__ = "messages"
    # In page order exactly (created_at, id): no sort, and deep pages skip index entries rather than rows.
    __table_args__ = (Index("ix_messages_session_id_created_at_id", "session_id", "created_at", "id"),)

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    turn_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # user|assistant|system
    content: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # content blocks, each typed
    text: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(100))
    sdk_uuid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ToolCall(IdMixin, Base):
    __tablename__ = "tool_calls"
    __table_args__ = (UniqueConstraint("session_id", "tool_use_id"),)

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    tool_use_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    input: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output: Mapped[Any | None] = mapped_column(JSON)
    is_error: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="started")  # started|completed|failed
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)


class PermissionRequest(IdMixin, Base):
    """A permission decision; `decision` is null while a person has yet to answer."""

    __tablename__ = "permission_requests"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    tool_name: Mapped[str] = mapped_column(String(200))
    tool_use_id: Mapped[str | None] = mapped_column(String(100))
    input_summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decision: Mapped[str | None] = mapped_column(String(8))  # allow|deny
    decided_by: Mapped[str | None] = mapped_column(String(16))  # mode|rule|user|timeout|path_guard
    reason: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]


class HookRun(IdMixin, Base):
    __tablename__ = "hook_runs"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    tool_name: Mapped[str | None] = mapped_column(String(200))
    tool_use_id: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(16))  # continue|block
    reason: Mapped[str | None] = mapped_column(String(1000))
    duration_ms: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricsSnapshot(IdMixin, Base):
    __tablename__ = "metrics_snapshots"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_creation_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Money, default=0)
    total_cost_usd: Mapped[float] = mapped_column(Money, default=0)
    num_turns: Mapped[int] = mapped_column(default=0)
    tool_calls_by_tool: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    error_count: Mapped[int] = mapped_column(default=0)
    duration_ms: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SessionEvent(Base):
    """The durable event log: one row per event, `seq` gap-free per session."""

    __tablename__ = "session_events"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SessionArchive(IdMixin, Base):
    __tablename__ = "session_archives"

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), unique=True)
    path: Mapped[str] = mapped_column(String(1000))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_count: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    restored_at: Mapped[datetime | None]


class IdempotencyRecord(IdMixin, Base):
    """The first response to a request carrying an `Idempotency-Key`, replayed for the same key."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("user_id", "scope", "key"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    # Of the request's method, path and validated body: the same key with another request is refused.
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The request is still running (a `wait: true` query); `response` holds its answer so far.
    in_progress: Mapped[bool] = mapped_column(default=False, server_default=false())
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
