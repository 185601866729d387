"""Turns SDK messages into rows and events: one short transaction per message, so history is durable as it happens."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from claude_agent_sdk import AssistantMessage, ResultMessage, StreamEvent, SystemMessage, UserMessage
from claude_agent_sdk.types import TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.bus import BusEvent
from agent_api.event_log import append_event, message_payload
from agent_api.metrics import tool_label
from agent_api.models import HookRun, Message, Session, ToolCall
from agent_api.models.base import utcnow
from agent_api.runtime import costs
from agent_api.runtime.agent import HookRecord
from agent_api.runtime.permissions import Verdict, input_summary
from agent_api.state import AppState
from agent_api.turns import repository as repo
from agent_api.turns.accounting import TurnOutcome, announce_budget_levels, record_failure, record_result
from agent_api.turns.approvals import Approvals
from agent_api.turns.jsonable import jsonable

MAX_STORED_OUTPUT = 100_000
EVENT_OUTPUT_PREVIEW = 2_000


def _cap(value: Any, limit: int) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) <= limit:
        return jsonable(value)
    return text[:limit] + f"... [{len(text) - limit} more characters]"


def block_json(block: Any) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking}
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": jsonable(block.input)}
    if isinstance(block, ToolResultBlock):
        return {
            "type": "tool_result",
            "tool_use_id": block.tool_use_id,
            "content": _cap(block.content, MAX_STORED_OUTPUT),
            "is_error": bool(block.is_error),
        }
    data = dataclasses.asdict(block) if dataclasses.is_dataclass(block) and not isinstance(block, type) else {}
    return {"type": type(block).__name__, **jsonable(data)}


def _text_of(blocks: list[Any]) -> str | None:
    texts = [b.text for b in blocks if isinstance(b, TextBlock)]
    return "\n".join(texts) if texts else None


class TurnRecorder(Approvals):
    """Observes one turn for the runtime and writes down everything it sees."""

    def __init__(
        self,
        state: AppState,
        session_id: uuid.UUID,
        turn_id: uuid.UUID,
        user_id: uuid.UUID,
        *,
        session: Session | None = None,
    ) -> None:
        self.state = state
        self.session_id = session_id
        self.turn_id = turn_id
        self.user_id = user_id
        # What the session row said when the turn started: the agent's start-up facts are written only when they
        # change, and the rules need no read before the first tool call.
        self._known: dict[str, Any] = {}
        if session is not None:
            self._known = {"sdk_session_id": session.sdk_session_id, "model": session.model}
            self._known["mcp_status"] = session.mcp_status
            self._rules = (list(session.allowed_tools or []), list(session.disallowed_tools or []))
        self.decided: set[str] = set()
        # Hook runs and automatic decisions, written with the next message's transaction rather than while the
        # agent CLI waits for the hook's answer.
        self._deferred: list[Callable[[AsyncSession], Awaitable[None]]] = []
        # Usage of each model call so far, by API message id, from the stream: what a turn that ends without the
        # CLI's result is billed for. Written with the next message, so a crash loses at most the last call's.
        self._usage: dict[str, dict[str, Any]] = {}
        self._current_call: str | None = None
        self._usage_written: dict[str, int] = {}

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.state.db.transaction() as db:
            deferred, self._deferred = self._deferred, []
            for write in deferred:
                await write(db)
            yield db
            await self._write_usage(db)

    def _track_usage(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            self._current_call = str(event["message"].get("id") or uuid.uuid4())
            self._usage[self._current_call] = dict(event["message"].get("usage") or {})
        elif kind == "message_delta" and self._current_call in self._usage and isinstance(event.get("usage"), dict):
            self._usage[self._current_call].update(event["usage"])

    async def _write_usage(self, db: AsyncSession) -> None:
        if not self._usage:
            return
        total: dict[str, int] = {}
        for usage in self._usage.values():
            total = costs.add_usage(total, usage)
        if total != self._usage_written:
            self._usage_written = total
            await repo.set_turn_usage(db, self.turn_id, total)

    async def on_message(self, message: Any) -> None:
        if isinstance(message, StreamEvent):
            self._track_usage(message.event)
            self._forward_delta(message.event)
        elif isinstance(message, SystemMessage) and message.subtype == "init":
            await self._on_init(message.data)
        elif isinstance(message, AssistantMessage):
            await self._on_assistant(message)
        elif isinstance(message, UserMessage):
            await self._on_user(message)

    def _forward_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta") if event.get("type") == "content_block_delta" else None
        bus = self.state.bus
        if not isinstance(delta, dict) or bus is None or not bus.subscriber_count(self.session_id):
            return
        kind = delta.get("type")
        text = delta.get("text") if kind == "text_delta" else delta.get("partial_json") or delta.get("thinking")
        if text:
            data = {"turn_id": str(self.turn_id), "index": event.get("index"), "kind": kind, "text": text}
            bus.publish([BusEvent(self.session_id, None, "delta", data)])

    async def _on_init(self, data: dict[str, Any]) -> None:
        values: dict[str, Any] = {"sdk_session_id": data.get("session_id")}
        if data.get("model"):
            values["model"] = data["model"]
        if isinstance(data.get("mcp_servers"), list):
            values["mcp_status"] = [
                {"name": str(m.get("name")), "status": str(m.get("status"))}
                for m in data["mcp_servers"]
                if isinstance(m, dict)
            ]
        if all(self._known.get(k, ...) == v for k, v in values.items()):
            return  # a live agent's init repeats the same facts every turn
        async with self._transaction() as db:
            await repo.set_session_fields(db, self.session_id, **values)
        self._known.update(values)

    async def _on_assistant(self, message: AssistantMessage) -> None:
        blocks = list(message.content)
        async with self._transaction() as db:
            row = Message(
                session_id=self.session_id,
                turn_id=self.turn_id,
                role="assistant",
                content=[block_json(b) for b in blocks],
                text=_text_of(blocks),
                model=message.model,
                sdk_uuid=getattr(message, "uuid", None),
                created_at=utcnow(),
            )
            db.add(row)
            await db.flush()
            await append_event(db, self.session_id, "message", message_payload(row))
            tool_uses = [b for b in blocks if isinstance(b, ToolUseBlock)]
            for use in tool_uses:
                call = ToolCall(
                    session_id=self.session_id,
                    turn_id=self.turn_id,
                    tool_use_id=use.id,
                    name=use.name,
                    input=jsonable(use.input),
                    status="started",
                    started_at=utcnow(),
                )
                db.add(call)
                await db.flush()
                await append_event(
                    db,
                    self.session_id,
                    "tool_call_started",
                    {
                        "tool_call_id": str(call.id),
                        "tool_use_id": use.id,
                        "name": use.name,
                        "input": input_summary(call.input),
                        "turn_id": str(self.turn_id),
                    },
                )
            await repo.add_totals(db, self.session_id, message_count=1, tool_call_count=len(tool_uses))
        for use in tool_uses:
            self.state.metrics.tool_calls.labels(tool_label(use.name)).inc()

    async def _on_user(self, message: UserMessage) -> None:
        content = message.content
        blocks: list[Any] = [TextBlock(text=content)] if isinstance(content, str) else list(content)
        structured = getattr(message, "tool_use_result", None)
        async with self._transaction() as db:
            row = Message(
                session_id=self.session_id,
                turn_id=self.turn_id,
                role="user",
                content=[block_json(b) for b in blocks],
                text=_text_of(blocks),
                sdk_uuid=getattr(message, "uuid", None),
                created_at=utcnow(),
            )
            db.add(row)
            await db.flush()
            await append_event(db, self.session_id, "message", message_payload(row))
            for result in (b for b in blocks if isinstance(b, ToolResultBlock)):
                await self._complete_tool_call(db, result, structured)
            await repo.add_totals(db, self.session_id, message_count=1)

    async def _complete_tool_call(self, db: Any, result: ToolResultBlock, structured: Any) -> None:
        call = await repo.get_tool_call(db, self.session_id, result.tool_use_id)
        if call is None:
            return
        now = utcnow()
        output = structured if structured is not None else result.content
        call.output = _cap(output, MAX_STORED_OUTPUT)
        call.is_error = bool(result.is_error)
        call.status = "failed" if call.is_error else "completed"
        call.finished_at = now
        call.duration_ms = int((now - call.started_at).total_seconds() * 1000)
        await db.flush()
        await append_event(
            db,
            self.session_id,
            "tool_call_completed",
            {
                "tool_call_id": str(call.id),
                "tool_use_id": call.tool_use_id,
                "name": call.name,
                "is_error": call.is_error,
                "output": _cap(result.content, EVENT_OUTPUT_PREVIEW),
                "duration_ms": call.duration_ms,
                "turn_id": str(self.turn_id),
            },
        )

    # --- hooks ---------------------------------------------------------------------------------------

    async def on_hook(self, record: HookRecord) -> None:
        if record.event == "PostToolUse" and record.tool_use_id and record.tool_use_id not in self.decided:
            # The CLI allowed it by its own rules for the mode (read-only Bash, say): still a decision on record.
            verdict = Verdict("allow", "mode", "allowed by the agent CLI's rules for this permission mode")
            await self.on_decision(record.tool_name or "", {}, record.tool_use_id, verdict)
        self._deferred.append(lambda db: self._write_hook(db, record, utcnow()))

    async def _write_hook(self, db: AsyncSession, record: HookRecord, when: datetime) -> None:
        db.add(
            HookRun(
                session_id=self.session_id,
                turn_id=self.turn_id,
                event=record.event,
                tool_name=record.tool_name,
                tool_use_id=record.tool_use_id,
                outcome=record.outcome,
                reason=record.reason,
                duration_ms=record.duration_ms,
                created_at=when,
            )
        )

    # --- the end of the turn -------------------------------------------------------------------------

    async def finish(
        self, result: ResultMessage | None, interrupted: bool, billed_before: float | None = None
    ) -> TurnOutcome | None:
        warned = False
        async with self._transaction() as db:
            await self._write_usage(db)
            self._usage.clear()  # booked below; the result's own usage replaces it
            outcome = await record_result(
                db, self.session_id, self.turn_id, self.user_id, result, interrupted, billed_before
            )
            if outcome is not None:
                warned = await announce_budget_levels(db, self.state, self.session_id, self.user_id, outcome.cost_usd)
        if outcome is not None:  # counted once committed
            metrics = self.state.metrics
            metrics.record_turn(outcome.status, outcome.input_tokens, outcome.output_tokens, outcome.cost_usd)
            if warned:
                metrics.budget_warnings.inc()
        return outcome

    async def fail(self, error: BaseException, *, start_failed: bool) -> None:
        async with self._transaction() as db:
            await self._write_usage(db)
            self._usage.clear()
            cost = await record_failure(
                db, self.session_id, self.turn_id, self.user_id, error, start_failed=start_failed
            )
        self.state.metrics.record_turn("failed", 0, 0, cost)
