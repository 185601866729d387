"""All ORM models, imported here so the metadata is complete for Alembic."""

from agent_api.models.base import Base
from agent_api.models.session import (
    HookRun,
    IdempotencyRecord,
    Message,
    MetricsSnapshot,
    PermissionRequest,
    Session,
    SessionArchive,
    SessionEvent,
    StatusChange,
    ToolCall,
    Turn,
)
from agent_api.models.streaming import StreamTicket
from agent_api.models.user import ApiKey, RefreshTokenFamily, User

__all__ = [
    "ApiKey",
    "Base",
    "HookRun",
    "IdempotencyRecord",
    "Message",
    "MetricsSnapshot",
    "PermissionRequest",
    "RefreshTokenFamily",
    "Session",
    "SessionArchive",
    "SessionEvent",
    "StatusChange",
    "StreamTicket",
    "ToolCall",
    "Turn",
    "User",
]
