"""Webhook events: a delivery row per subscribed endpoint, written in the transaction of the change it reports.

Rows are the outbox: what commits is delivered (at least once, by the dispatcher), what rolls back never existed.
The session event log feeds this module (`from_session_event`), so a turn, a permission or a status change is
announced once, where it is recorded; task executions and tests call `emit` directly.

Payloads are thin on purpose: ids, a short summary and the API path of the resource, never a turn's output, a
tool's full input or a secret. A receiver that wants more reads it through the API with its own credentials.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.db import after_commit
from agent_api.models import Session, User, Webhook, WebhookDelivery
from agent_api.models.base import utcnow
from agent_api.models.user import ROLE_ADMIN

EventType = Literal[
    "turn.completed",
    "turn.failed",
    "permission.requested",
    "permission.decided",
    "session.status_changed",
    "task_execution.completed",
    "task_execution.failed",
    "budget.warning",
    "budget.exceeded",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
TEST_EVENT = "webhook.test"
API = "/api/v1"
# Key in `session.info` for the callable that wakes the delivery loop once new deliveries commit.
WAKE_DELIVERIES = "wake_deliveries"


def envelope(event_type: str, data: dict[str, Any], when: datetime | None = None) -> dict[str, Any]:
    """The Standard Webhooks payload: `{"type", "timestamp", "data"}`."""
    return {"type": event_type, "timestamp": (when or utcnow()).isoformat(), "data": data}


def new_event_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


async def emit(db: AsyncSession, user_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> int:
    """Queue `event_type` for the user's active webhooks that subscribe to it, and every global one that does;
    returns how many deliveries were queued."""
    return await _queue(db, Webhook.user_id == user_id, event_type, data)


async def emit_for_session(db: AsyncSession, session_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> int:
    owner = select(Session.user_id).where(Session.id == session_id).scalar_subquery()
    return await _queue(db, Webhook.user_id == owner, event_type, data)


def _listening(owned_by_the_user: Any) -> Any:
    """Webhooks that hear an event: the user's own, and global ones, each only while its owner is an active user
    (and for a global one, still an admin): a demoted or disabled owner hears nobody's events."""
    return and_(
        Webhook.is_active.is_(True),
        User.is_active.is_(True),
        or_(owned_by_the_user, and_(Webhook.is_global.is_(True), User.role == ROLE_ADMIN)),
    )


async def _queue(db: AsyncSession, owned_by_the_user: Any, event_type: str, data: dict[str, Any]) -> int:
    listening = select(Webhook.id, Webhook.events).join(User, User.id == Webhook.user_id)
    rows = (await db.execute(listening.where(_listening(owned_by_the_user)))).all()
    targets = [webhook_id for webhook_id, events in rows if event_type in (events or ())]
    queue_deliveries(db, targets, event_type, data)
    return len(targets)


def queue_deliveries(
    db: AsyncSession, webhook_ids: Iterable[uuid.UUID], event_type: str, data: dict[str, Any]
) -> list[WebhookDelivery]:
    now = utcnow()
    payload, event_id = envelope(event_type, data, now), new_event_id()
    deliveries = [
        WebhookDelivery(
            id=uuid.uuid4(),
            webhook_id=webhook_id,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for webhook_id in webhook_ids
    ]
    if deliveries:
        db.add_all(deliveries)
        wake = db.info.get(WAKE_DELIVERIES)
        if wake is not None:
            after_commit(db, wake)
    return deliveries


PREVIEW_CHARS = 200


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        return value[:PREVIEW_CHARS] + "…"
    return value


def _preview(tool_input: Any) -> dict[str, Any]:
    """What a person needs to decide on a tool call, not its whole input: top-level plain values, each cut short;
    nested values only named."""
    if not isinstance(tool_input, dict):
        return {}
    preview: dict[str, Any] = {}
    for key, value in list(tool_input.items())[:20]:
        if isinstance(value, (dict, list)):
            preview[str(key)[:100]] = f"[{type(value).__name__} of {len(value)}]"
        else:
            preview[str(key)[:100]] = _short(value)
    return preview


def _session_path(session_id: uuid.UUID) -> str:
    return f"{API}/sessions/{session_id}"


def _turn_event(session_id: uuid.UUID, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    status = data.get("turn_status") or ("failed" if data.get("code") else "completed")
    failed = status != "completed" or bool(data.get("is_error")) or "code" in data
    summary: dict[str, Any] = {
        "session_id": str(session_id),
        "turn_id": data.get("turn_id"),
        "status": "failed" if "code" in data else status,
        "is_error": bool(data.get("is_error")) or "code" in data,
        "path": f"{_session_path(session_id)}/messages",
    }
    for key in ("cost_usd", "num_turns", "duration_ms"):
        if key in data:
            summary[key] = data[key]
    if "code" in data:
        summary["error_code"] = data["code"]
    return ("turn.failed" if failed else "turn.completed"), summary


def from_session_event(session_id: uuid.UUID, type_: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The webhook event (type, thin data) a session event announces, if any."""
    sid = str(session_id)
    if type_ == "status_change":
        return "session.status_changed", {
            "session_id": sid,
            "from": data.get("from"),
            "status": data.get("status"),
            "reason": _short(data.get("reason")),
            "path": _session_path(session_id),
        }
    if type_ == "result" or (type_ == "error" and data.get("turn_id")):
        return _turn_event(session_id, data)
    if type_ == "permission_request":
        return "permission.requested", {
            "session_id": sid,
            "request_id": data.get("request_id"),
            "tool_name": data.get("tool"),
            "input_summary": _preview(data.get("input")),
            "expires_at": data.get("expires_at"),
            "path": f"{_session_path(session_id)}/permissions/{data.get('request_id')}",
        }
    if type_ == "permission_resolved":
        return "permission.decided", {
            "session_id": sid,
            "request_id": data.get("request_id"),
            "decision": data.get("decision"),
            "decided_by": data.get("decided_by"),
            "path": f"{_session_path(session_id)}/permissions",
        }
    if type_ in ("budget_warning", "budget_exceeded"):
        return "budget.warning" if type_ == "budget_warning" else "budget.exceeded", {
            "session_id": sid,
            "user_id": data.get("user_id"),
            **{k: data[k] for k in ("monthly_budget_usd", "current_month_cost_usd", "percent_used") if k in data},
            "path": f"{API}/monitoring/costs/budget/{data.get('user_id')}",
        }
    return None
