"""All ORM models, imported here so the metadata is complete for Alembic."""

from agent_api.models.audit import AuditEvent
from agent_api.models.base import Base
from agent_api.models.mcp import McpServer
from agent_api.models.report import Report
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
from agent_api.models.task import Task, TaskExecution
from agent_api.models.template import SessionTemplate, TemplateShare
from agent_api.models.user import ApiKey, DownloadTicket, RefreshTokenFamily, User
from agent_api.models.webhook import Webhook, WebhookDelivery

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Base",
    "DownloadTicket",
    "HookRun",
    "IdempotencyRecord",
    "McpServer",
    "Message",
    "MetricsSnapshot",
    "PermissionRequest",
    "RefreshTokenFamily",
    "Report",
    "Session",
    "SessionArchive",
    "SessionEvent",
    "SessionTemplate",
    "StatusChange",
    "StreamTicket",
    "Task",
    "TaskExecution",
    "TemplateShare",
    "ToolCall",
    "Turn",
    "User",
    "Webhook",
    "WebhookDelivery",
]
