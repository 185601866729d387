"""The end of a turn in the books: its result, cost and tokens on the turn, the session and the user, a metrics
snapshot, the `result` event and the status back to `active`; or the failure that ended it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.event_log import append_event, claim_and_record
from agent_api.models import MetricsSnapshot, Session, Turn, User
from agent_api.models.base import utcnow
from agent_api.monitoring import budgets
from agent_api.monitoring import service as monitoring_service
from agent_api.runtime import costs
from agent_api.state import AppState
from agent_api.turns import repository as repo
from agent_api.turns.jsonable import jsonable

if TYPE_CHECKING:
    from claude_agent_sdk import ResultMessage  # the SDK is imported with the first agent (`runtime.agent`)


@dataclass(frozen=True)
class TurnOutcome:
    status: str
    cost_usd: float
    cost_estimated: bool
    input_tokens: int
    output_tokens: int


def _turn_status(result: ResultMessage | None, interrupted: bool) -> str:
    if interrupted:
        return "interrupted"
    if result is None or (result.is_error and result.subtype != "success"):
        return "failed"
    return "completed"


def _copy_result(turn: Turn, result: ResultMessage) -> None:
    turn.result = result.result
    turn.is_error = bool(result.is_error)
    turn.usage = jsonable(dict(result.usage or {}))
    turn.model_usage = jsonable(result.model_usage) if result.model_usage else None
    turn.num_turns = result.num_turns
    turn.duration_ms = result.duration_ms
    turn.duration_api_ms = result.duration_api_ms
    turn.stop_reason = result.stop_reason or result.subtype
    turn.errors = list(getattr(result, "errors", None) or []) or None


async def estimated_cost(db: AsyncSession, turn: Turn) -> float:
    """A turn that ended without the CLI's result, priced from the usage its model calls reported so far, at the
    rate the session's earlier turns were billed at (list price when there are none)."""
    tokens = costs.weighted_tokens(turn.usage)
    if tokens <= 0:
        return 0.0
    billed = await repo.billed_turns(db, turn.session_id)
    billed_tokens = sum(costs.weighted_tokens(usage) for _, usage in billed)
    if billed_tokens > 0:
        rate = sum(cost for cost, _ in billed) / billed_tokens
    else:
        rate = costs.list_rate(await repo.session_model(db, turn.session_id))
    return tokens * rate


async def _book(db: AsyncSession, turn: Turn, user_id: uuid.UUID, cost: float, estimated: bool) -> None:
    """The turn's cost and tokens on the turn, its session and its user."""
    usage = turn.usage or {}
    turn.cost_usd, turn.cost_estimated = cost, estimated
    turn.input_tokens = int(usage.get("input_tokens") or 0)
    turn.output_tokens = int(usage.get("output_tokens") or 0)
    await repo.add_totals(
        db,
        turn.session_id,
        total_cost_usd=cost,
        total_input_tokens=turn.input_tokens,
        total_output_tokens=turn.output_tokens,
        total_cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
        total_cache_creation_tokens=int(usage.get("cache_creation_input_tokens") or 0),
    )
    await repo.add_user_totals(db, user_id, cost, turn.input_tokens, turn.output_tokens)


async def _snapshot(db: AsyncSession, session: Session, turn: Turn, result: ResultMessage | None) -> None:
    by_tool, errors = await monitoring_service.tool_counts(db, session.id, turn.id)
    await db.refresh(session)
    usage = turn.usage or {}
    db.add(
        MetricsSnapshot(
            session_id=session.id,
            turn_id=turn.id,
            input_tokens=turn.input_tokens,
            output_tokens=turn.output_tokens,
            cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
            cache_creation_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            cost_usd=turn.cost_usd,
            total_cost_usd=float(session.total_cost_usd or 0),
            num_turns=result.num_turns if result else 0,
            tool_calls_by_tool=by_tool,
            error_count=errors + (1 if turn.status == "failed" else 0),
            duration_ms=result.duration_ms if result else 0,
            created_at=turn.finished_at,
        )
    )


async def record_result(
    db: AsyncSession,
    session_id: uuid.UUID,
    turn_id: uuid.UUID,
    user_id: uuid.UUID,
    result: ResultMessage | None,
    interrupted: bool,
    billed_before: float | None = None,
) -> TurnOutcome | None:
    """Book the end of a turn. `billed_before`: what the agent process's earlier turns were billed in all."""
    await repo.lock_user(db, user_id)
    turn = await repo.get_turn(db, turn_id)
    session = await repo.get_session(db, session_id)
    if turn is None or session is None:
        return None
    turn.status, turn.finished_at = _turn_status(result, interrupted), utcnow()
    if result is not None:
        _copy_result(turn, result)
        total = float(result.total_cost_usd or 0)
        cost, estimated = costs.turn_cost(total, result.usage, result.model_usage, billed_before), False
    else:
        cost, estimated = await estimated_cost(db, turn), True
    await _book(db, turn, user_id, cost, estimated)
    await _snapshot(db, session, turn, result)
    await append_event(
        db,
        session_id,
        "result",
        {
            "turn_id": str(turn_id),
            "turn_status": turn.status,
            "result": turn.result,
            "is_error": turn.is_error,
            "cost_usd": cost,
            "cost_estimated": estimated,
            "usage": turn.usage,
            "num_turns": turn.num_turns,
            "duration_ms": turn.duration_ms,
        },
    )
    await claim_and_record(db, session_id, ("processing", "waiting"), "active", f"turn {turn.status}")
    return TurnOutcome(turn.status, cost, estimated, turn.input_tokens, turn.output_tokens)


async def announce_budget_levels(
    db: AsyncSession, state: AppState, session_id: uuid.UUID, user_id: uuid.UUID, cost: float
) -> bool:
    """`budget_warning` and `budget_exceeded` events on the session's stream (and so to webhooks) when this turn
    took the month past the warning level or the limit; True when the warning level was crossed.

    Runs after the user row was updated in this transaction (which holds its lock on PostgreSQL), so two turns
    finishing at once cannot both miss, or both send, an event.
    """
    user = await db.get(User, user_id)
    crossed = await budgets.levels_crossed(db, state, user_id, cost, user.monthly_budget_usd if user else None)
    for kind, data in crossed:
        await append_event(db, session_id, kind, data)
    return any(kind == "budget_warning" for kind, _ in crossed)


async def record_failure(
    db: AsyncSession,
    session_id: uuid.UUID,
    turn_id: uuid.UUID,
    user_id: uuid.UUID,
    error: BaseException,
    *,
    start_failed: bool,
) -> float:
    """Book a turn the agent could not finish; what its model calls had used is billed as an estimate."""
    message = str(error)[:2000] or type(error).__name__
    await repo.lock_user(db, user_id)
    turn = await repo.get_turn(db, turn_id)
    cost = 0.0
    if turn is not None:
        turn.status, turn.finished_at = "failed", utcnow()
        turn.errors = [message]
        cost = await estimated_cost(db, turn)
        if cost:
            await _book(db, turn, user_id, cost, True)
    await repo.set_session_fields(db, session_id, error_message=message)
    code = "agent_start_failed" if start_failed else "turn_failed"
    await append_event(db, session_id, "error", {"code": code, "message": message, "turn_id": str(turn_id)})
    await claim_and_record(
        db,
        session_id,
        ("processing", "waiting", "connecting"),
        "failed" if start_failed else "active",
        message[:500],
    )
    return cost
