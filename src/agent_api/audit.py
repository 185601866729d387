"""Writing the audit log. Admin actions are written in the request's own transaction (they stand or fall with
it); security events are usually written as a request is refused, so they go in a transaction of their own
that runs after the refused one has rolled back."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import AuditEvent
from agent_api.models.base import utcnow
from agent_api.state import AppState

log = logging.getLogger("agent_api.audit")


def _event(
    action: str,
    *,
    actor_id: uuid.UUID | None = None,
    target_user_id: uuid.UUID | None = None,
    target_type: str | None = None,
    target_id: str | uuid.UUID | None = None,
    ip_address: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent(
        action=action,
        actor_id=actor_id,
        target_user_id=target_user_id,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        ip_address=ip_address,
        details=details or {},
        created_at=utcnow(),
    )


def record(db: AsyncSession, action: str, **fields: Any) -> None:
    """Add an audit row to the current transaction."""
    db.add(_event(action, **fields))


async def _write(state: AppState, event: AuditEvent) -> None:
    async with state.db.transaction() as db:
        db.add(event)


def record_later(state: AppState, action: str, **fields: Any) -> None:
    """Write an audit row in its own transaction, after the current one ends (committed or not).

    On SQLite the request's write transaction holds the database lock; this one waits for it rather than
    deadlocking inside the request.
    """
    event = _event(action, **fields)
    log.info("audit %s", action, extra={"audit_action": action, "actor_id": str(fields.get("actor_id") or "")})
    state.background.spawn(_write(state, event), name=f"audit-{action}")
