"""Permission decisions during a turn: those taken without asking (written with the next message), and requests a
person answers through the dispatcher, with the timeout or the end of the turn settling those nobody answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import audit
from agent_api.event_log import append_event, claim_and_record
from agent_api.models import PermissionRequest
from agent_api.models.base import utcnow
from agent_api.runtime.permissions import DecidedBy, Verdict, input_summary
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
            await self._record_request(request_id, tool_name, tool_input, tool_use_id)
        except BaseException:
            state.dispatcher.discard_permission(request_id)
            raise
        try:
            answer = await state.dispatcher.wait_permission(
                request_id, self.session_id, state.settings.permission_timeout_s
            )
        except asyncio.CancelledError:
            # The turn ended (interrupt, pause, shutdown) while waiting: the request must not stay pending.
            await asyncio.shield(self._settle(request_id, "cancelled", "the turn ended before an answer"))
            raise
        if answer is None:
            verdict = await self._settle(request_id, "timeout", "no answer in time")
        else:
            decision, reason = answer
            verdict = Verdict("allow" if decision == "allow" else "deny", "user", reason or f"{decision} by the user")
        async with state.db.transaction() as db:
            if verdict.decision == "deny":
                self._audit_denial(db, tool_name, tool_use_id, verdict)
            if not await repo.pending_permissions(db, self.session_id):
                await claim_and_record(db, self.session_id, ("waiting",), "processing", "permission decided")
        return verdict

    async def _record_request(
        self, request_id: uuid.UUID, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None
    ) -> None:
        async with self.state.db.transaction() as db:
            summary = jsonable(input_summary(tool_input))
            db.add(
                PermissionRequest(
                    id=request_id,
                    session_id=self.session_id,
                    turn_id=self.turn_id,
                    tool_name=tool_name,
                    tool_use_id=tool_use_id,
                    input_summary=summary,
                    created_at=utcnow(),
                )
            )
            await db.flush()
            await append_event(
                db,
                self.session_id,
                "permission_request",
                {"request_id": str(request_id), "tool": tool_name, "input": summary, "tool_use_id": tool_use_id},
            )
            await claim_and_record(db, self.session_id, ("processing",), "waiting", f"{tool_name} needs permission")

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

    async def _settle(self, request_id: uuid.UUID, decided_by: DecidedBy, reason: str) -> Verdict:
        """Deny a request nobody answered, unless an answer got in first (then that answer stands)."""
        async with self._transaction() as db:
            if await repo.decide_permission(db, request_id, "deny", decided_by, reason):
                await append_event(
                    db,
                    self.session_id,
                    "permission_resolved",
                    {"request_id": str(request_id), "decision": "deny", "decided_by": decided_by},
                )
                return Verdict("deny", decided_by, reason)
            # Answered at the last moment: the answer stands.
            row = await db.get(PermissionRequest, request_id)
            if row is None or row.decision != "allow":
                return Verdict("deny", "user", row.reason if row and row.reason else "denied")
            return Verdict("allow", "user", row.reason or "allowed by the user")
