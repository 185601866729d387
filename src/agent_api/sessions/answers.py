"""A person's answer to a permission request (REST or WebSocket), and the rule `remember: "session"` adds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import audit
from agent_api.agent_settings import MAX_TOOL_RULES
from agent_api.db import after_commit
from agent_api.errors import Conflict, NotFound, ValidationFailed
from agent_api.event_log import append_event
from agent_api.models import PermissionRequest, Session, User
from agent_api.runtime.permissions import remembered_rule
from agent_api.sessions import repository as repo
from agent_api.sessions.schemas import PermissionAnswer
from agent_api.state import AppState
from agent_api.turns import service as turns_service


@dataclass(frozen=True)
class Answered:
    request: PermissionRequest
    # The rule added to the session, when the answer asked to remember and one could be derived safely.
    remembered_rule: str | None


async def answer_permission(
    db: AsyncSession, state: AppState, user: User, s: Session, request_id: uuid.UUID, answer: PermissionAnswer
) -> Answered:
    """Decide a pending request; with `remember: "session"` also add the rule it stands for to the session, in the
    same transaction (the waiting turn reads the session's rules again once it hears the answer)."""
    if answer.remember is not None:
        # The session's row first, as pause and delete take it: the rules are read, changed and written under it.
        await db.refresh(s, with_for_update=True)
    request = await repo.get_permission(db, s.id, request_id)
    if request is None:
        raise NotFound("Permission request not found", code="permission_request_not_found")
    if request.decision is not None:
        raise Conflict("This permission request is already decided", code="permission_already_decided")
    rule = remembered_rule(request.tool_name, request.input_summary) if answer.remember == "session" else None
    if rule is not None:
        _add_rule(s, rule, allow=answer.decision == "allow")
    reason = answer.message or f"{answer.decision} by the user"
    if not await turns_service.answer_permission(db, request_id, answer.decision, reason):
        raise Conflict("This permission request is already decided", code="permission_already_decided")
    await db.refresh(request)
    if rule is not None:
        audit.record(
            db,
            "permission.rule_remembered",
            actor_id=user.id,
            target_user_id=s.user_id,
            target_type="session",
            target_id=s.id,
            details={"rule": rule, "decision": answer.decision, "request_id": str(request_id)},
        )
    await append_event(
        db,
        s.id,
        "permission_resolved",
        {"request_id": str(request_id), "decision": answer.decision, "decided_by": "user", "remembered_rule": rule},
    )
    decision = answer.decision
    after_commit(db, lambda: state.dispatcher.answer_permission(request_id, decision, reason))
    return Answered(request, rule)


def _add_rule(s: Session, rule: str, *, allow: bool) -> None:
    """An allow answer adds to `allowed_tools`, a deny answer to `disallowed_tools` (deny rules win over allow
    rules); a rule already there is not added twice."""
    field = "allowed_tools" if allow else "disallowed_tools"
    rules = list(getattr(s, field) or [])
    if rule in rules:
        return
    if len(rules) >= MAX_TOOL_RULES:
        raise ValidationFailed(
            f"The session already has {MAX_TOOL_RULES} {field} rules; this answer cannot remember another",
            code="too_many_rules",
            details={"field": field, "rule": rule},
        )
    setattr(s, field, [*rules, rule])  # a new list: the JSON column sees the change
