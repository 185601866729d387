"""Permission decisions during a turn: those taken without asking (written with the next message), and requests a
person answers through the dispatcher, with the timeout or the end of the turn settling those nobody answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import audit
from agent_api.agent_settings import PermissionPolicy, permission_policy, seconds_text
from agent_api.event_log import append_event, claim_and_record
from agent_api.models import PermissionRequest
from agent_api.models.base import utcnow
from agent_api.runtime.permissions import DecidedBy, Decision, Verdict, input_summary
from agent_api.state import AppState
from agent_api.turns import repository as repo
from agent_api.turns.jsonable import jsonable


class Approvals:
    """The permission half of a turn's recorder."""

    state: AppState
    session_id: uuid.UUID
    turn_id: uuid.UUID
    user_id: uuid.UUID
    decided: set[str]
    _deferred: list[Callable[[AsyncSession], Awaitable[None]]]
    # The session's allow and deny rules, read once per turn and again after each person's answer (which may have
    # remembered a rule).
    _rules: tuple[list[str], list[str]] | None = None

    async def current_rules(self) -> tuple[list[str], list[str]] | None:
        if self._rules is None:
            async with self.state.db.transaction(readonly=True) as db:
                s = await repo.get_session(db, self.session_id)
                if s is None:
                    return None
                self._rules = (list(s.allowed_tools or []), list(s.disallowed_tools or []))
        return self._rules

    def _transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError

    async def on_decision(
        self, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None, verdict: Verdict
    ) -> None:
        if tool_use_id:
            self.decided.add(tool_use_id)
        summary, now = jsonable(input_summary(tool_input)), utcnow()
        self._deferred.append(lambda db: self._write_decision(db, tool_name, summary, tool_use_id, verdict, now))

    async def _write_decision(
        self,
        db: AsyncSession,
        tool_name: str,
        summary: dict[str, Any],
        tool_use_id: str | None,
        verdict: Verdict,
        when: datetime,
    ) -> None:
        request = PermissionRequest(
            session_id=self.session_id,
            turn_id=self.turn_id,
            tool_name=tool_name,
            tool_use_id=tool_use_id,
            input_summary=summary,
            decision=verdict.decision,
            decided_by=verdict.decided_by,
            reason=verdict.reason,
            created_at=when,
            decided_at=when,
        )
        db.add(request)
        if verdict.decision == "deny":
            self._audit_denial(db, tool_name, tool_use_id, verdict)
        await db.flush()
        await append_event(
            db,
            self.session_id,
            "permission_decision",
            {
                "request_id": str(request.id),
                "tool": tool_name,
                "decision": verdict.decision,
                "decided_by": verdict.decided_by,
                "reason": verdict.reason,
            },
        )

    async def ask_permission(self, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None) -> Verdict:
        if tool_use_id:
            self.decided.add(tool_use_id)
        state = self.state
        request_id = uuid.uuid4()
        # Ready before the request is committed (and streamed): an answer that comes at once is not missed.
        state.dispatcher.expect_permission(request_id, self.session_id)
        try:
            policy = await self._record_request(request_id, tool_name, tool_input, tool_use_id)
        except BaseException:
            state.dispatcher.discard_permission(request_id)
            raise
        try:
            answer = await state.dispatcher.wait_permission(request_id, self.session_id, policy.timeout_s)
        except asyncio.CancelledError:
            # The turn ended (interrupt, pause, shutdown) while waiting: the request must not stay pending.
            await asyncio.shield(self._settle(request_id, "deny", "cancelled", "the turn ended before an answer"))
            raise
        if answer is None:
            verdict = await self._settle(request_id, policy.on_timeout, "timeout", _timeout_reason(policy))
        else:
            decision, reason = answer
            verdict = Verdict("allow" if decision == "allow" else "deny", "user", reason or f"{decision} by the user")
        self._rules = None  # the answer may have remembered a rule for the session
        async with state.db.transaction() as db:
            if verdict.decision == "deny":
                self._audit_denial(db, tool_name, tool_use_id, verdict)
            if not await repo.pending_permissions(db, self.session_id):
                await claim_and_record(db, self.session_id, ("waiting",), "processing", "permission decided")
        return verdict

    async def _record_request(
        self, request_id: uuid.UUID, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None
    ) -> PermissionPolicy:
        """Record the pending request; returns how long it waits and what the silence becomes (the session's)."""
        async with self.state.db.transaction() as db:
            s = await repo.get_session(db, self.session_id)
            policy = permission_policy(s, self.state.settings.permission_timeout_s)
            summary = jsonable(input_summary(tool_input))
            created = utcnow()
            db.add(
                PermissionRequest(
                    id=request_id,
                    session_id=self.session_id,
                    turn_id=self.turn_id,
                    tool_name=tool_name,
                    tool_use_id=tool_use_id,
                    input_summary=summary,
                    created_at=created,
                )
            )
            await db.flush()
            await append_event(
                db,
                self.session_id,
                "permission_request",
                {
                    "request_id": str(request_id),
                    "tool": tool_name,
                    "input": summary,
                    "tool_use_id": tool_use_id,
                    "expires_at": (created + timedelta(seconds=policy.timeout_s)).isoformat(),
                    "on_timeout": policy.on_timeout,
                },
            )
            await claim_and_record(db, self.session_id, ("processing",), "waiting", f"{tool_name} needs permission")
        return policy

    def _audit_denial(self, db: AsyncSession, tool_name: str, tool_use_id: str | None, verdict: Verdict) -> None:
        details = {"tool": tool_name, "tool_use_id": tool_use_id, "decided_by": verdict.decided_by}
        audit.record(
            db,
            "permission.denied",
            actor_id=self.user_id,
            target_user_id=self.user_id,
            target_type="session",
            target_id=self.session_id,
            details={**details, "reason": verdict.reason, "turn_id": str(self.turn_id)},
        )

    async def _settle(self, request_id: uuid.UUID, decision: Decision, decided_by: DecidedBy, reason: str) -> Verdict:
        """Settle a request nobody answered (`decision` by the timeout policy, or deny when the turn ends), unless
        an answer got in first (then that answer stands)."""
        async with self._transaction() as db:
            if await repo.decide_permission(db, request_id, decision, decided_by, reason):
                await append_event(
                    db,
                    self.session_id,
                    "permission_resolved",
                    {"request_id": str(request_id), "decision": decision, "decided_by": decided_by, "reason": reason},
                )
                return Verdict(decision, decided_by, reason)
            # Answered at the last moment: the answer stands.
            row = await db.get(PermissionRequest, request_id)
            if row is None or row.decision != "allow":
                return Verdict("deny", "user", row.reason if row and row.reason else "denied")
            return Verdict("allow", "user", row.reason or "allowed by the user")


def _timeout_reason(policy: PermissionPolicy) -> str:
    waited = seconds_text(policy.timeout_s)
    if policy.on_timeout == "allow":
        return f"no answer in {waited}; allowed by the session's on_permission_timeout"
    return f"no answer in {waited}; denied (on_permission_timeout: deny)"
