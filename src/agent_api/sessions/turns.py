"""Starting a turn (the query endpoint's work) and running it in the background on the agent runtime."""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.errors import Conflict, ServiceUnavailable
from agent_api.event_log import append_event, claim_and_record
from agent_api.mcp_servers import service as mcp_service
from agent_api.models import Message, Session, Turn, User
from agent_api.models.base import utcnow
from agent_api.monitoring.budgets import agent_budget_fits, ensure_within_budget, turn_allowance
from agent_api.rate_limits import check_user_rate
from agent_api.runtime.agent import AgentSpec, AgentStartError, LiveAgent
from agent_api.sessions import repository as repo
from agent_api.sessions.recorder import TurnRecorder, message_payload
from agent_api.sessions.service import spec_for
from agent_api.state import AppState

log = logging.getLogger("agent_api.sessions")

QUERYABLE = ("created", "connecting", "active", "failed")
_REFUSALS = {
    "processing": ("session_busy", "The session is already running a turn"),
    "waiting": ("session_busy", "The session is waiting for a permission decision"),
    "paused": ("session_paused", "The session is paused; resume it first"),
    "archived": ("session_archived", "The session is archived; resume it first"),
    "completed": ("session_completed", "The session is completed; resume it first"),
    "terminated": ("session_terminated", "The session was deleted"),
}


def _refuse(status: str) -> Conflict:
    code, message = _REFUSALS.get(status, ("invalid_status", f"A session in status {status!r} cannot take a query"))
    return Conflict(message, code=code)


async def start_query(
    db: AsyncSession, state: AppState, user: User, s: Session, text: str, *, count_rate: bool = True
) -> tuple[Turn, Message]:
    """Claim the session for a turn and record the user's message; the caller commits, then dispatches.

    `count_rate=False` for turns no request asked for directly (task executions count as `execute`)."""
    if state.draining:
        raise ServiceUnavailable("The server is shutting down", code="shutting_down")
    if s.status not in QUERYABLE:
        raise _refuse(s.status)
    if count_rate:
        check_user_rate(state, user.id, "query")
    # Before anything is flushed: a refusal leaves nothing behind. The turn row added below is what the
    # next concurrent check counts as in flight.
    await ensure_within_budget(db, state, user.id)
    if await claim_and_record(db, s.id, QUERYABLE, "processing", "query received") is None:
        await db.refresh(s)
        raise _refuse(s.status)
    now = utcnow()
    turn = Turn(id=uuid.uuid4(), session_id=s.id, user_id=user.id, prompt=text, status="queued", created_at=now)
    message = Message(
        session_id=s.id,
        turn_id=turn.id,
        role="user",
        content=[{"type": "text", "text": text}],
        text=text,
        created_at=now,
    )
    db.add(turn)
    await db.flush()  # the message refers to the turn; without relationships the unit of work cannot order them
    db.add(message)
    await db.flush()
    await repo.add_totals(db, s.id, message_count=1, turn_count=1)
    await append_event(db, s.id, "message_sent", {"message_id": str(message.id), "turn_id": str(turn.id)})
    await append_event(db, s.id, "message", message_payload(message))
    if s.started_at is None:
        s.started_at = now
    await db.flush()
    await db.refresh(s)
    return turn, message


def dispatch(state: AppState, session_id: uuid.UUID, turn_id: uuid.UUID, user_id: uuid.UUID) -> asyncio.Task[None]:
    """Run the turn in this process (the embedded dispatcher)."""
    state.interrupt_requested.discard(session_id)  # an interrupt aimed at an earlier turn is spent
    task = state.background.spawn(run_turn(state, session_id, turn_id, user_id), name=f"turn-{turn_id}")
    state.turn_tasks[session_id] = task
    task.add_done_callback(
        lambda t: state.turn_tasks.pop(session_id, None) if state.turn_tasks.get(session_id) is t else None
    )
    return task


async def run_turn(state: AppState, session_id: uuid.UUID, turn_id: uuid.UUID, user_id: uuid.UUID) -> None:
    pool = state.require_agents()
    async with state.db.transaction() as db:
        s = await repo.get_session(db, session_id)
        turn = await repo.get_turn(db, turn_id)
        if s is None or turn is None:
            return
        if s.status != "processing":  # paused or deleted before the turn started
            turn.status, turn.finished_at = "interrupted", utcnow()
            return
        turn.status, turn.started_at = "running", utcnow()
        spec = spec_for(state, s)
        attached_mcp = await mcp_service.load_attached(db, state, s.user_id, s.mcp_server_ids or [])
        spec.max_budget_usd = await turn_allowance(db, state, user_id, turn_id)
        session_spent = float(s.total_cost_usd or 0)
        prompt = turn.prompt
    spec.mcp_servers = await mcp_service.sdk_configs(state, attached_mcp)  # outside the transaction: may resolve DNS
    recorder = TurnRecorder(state, session_id, turn_id, user_id)
    if session_id in state.interrupt_requested:
        state.interrupt_requested.discard(session_id)
        await recorder.finish(None, interrupted=True)
        return
    try:
        await _apply_budget(state, spec, session_spent)
        result, agent = await pool.run_turn(spec, prompt, recorder)
    except AgentStartError as exc:
        log.warning("agent for session %s failed to start: %s", session_id, exc)
        await recorder.fail(exc, start_failed=True)
        return
    except Exception as exc:
        log.exception("turn %s of session %s failed", turn_id, session_id)
        await recorder.fail(exc, start_failed=False)
        return
    outcome = await recorder.finish(result, interrupted=agent.interrupted, billed_before=agent.billed_total_usd)
    if result is not None and result.total_cost_usd is not None:
        agent.billed_total_usd = float(result.total_cost_usd)
    elif outcome is not None and agent.billed_total_usd is not None:
        # The estimate stands for this turn; the process's next total includes what it really used.
        agent.billed_total_usd += outcome.cost_usd


async def _apply_budget(state: AppState, spec: AgentSpec, session_spent: float) -> None:
    """The agent CLI reads `--max-budget-usd` only when it starts, and counts spend from then on: a live client
    whose budget no longer matches this turn's allowance is restarted (the conversation resumes)."""
    pool = state.require_agents()
    agent = pool.warm(spec)
    if agent.spec is spec or not agent_budget_fits(agent, spec.max_budget_usd, session_spent):
        if agent.spec is not spec:
            await pool.close(spec.session_id)
            agent = pool.warm(spec)
        agent.budget_baseline_usd = session_spent


def warm(state: AppState, s: Session) -> None:
    """Start the session's agent process now, so the first message does not wait for it."""
    if state.agents is None or state.draining:
        return
    if s.mcp_server_ids:
        spawned = _warm_with_mcp(state, spec_for(state, s), s.user_id, list(s.mcp_server_ids))
        state.background.spawn(spawned, name=f"warm-{s.id}")
        return
    agent = state.agents.warm(spec_for(state, s))
    state.background.spawn(_record_warm_up(state, s.id, agent), name=f"warm-{s.id}")


async def _warm_with_mcp(state: AppState, spec: AgentSpec, user_id: uuid.UUID, server_ids: list[str]) -> None:
    """Warm-up for a session with MCP servers: their configs are loaded first, so the agent starts with them."""
    async with state.db.transaction(readonly=True) as db:
        attached = await mcp_service.load_attached(db, state, user_id, server_ids)
    spec.mcp_servers = await mcp_service.sdk_configs(state, attached)
    agent = state.require_agents().warm(spec)
    await _record_warm_up(state, spec.session_id, agent)


async def _record_warm_up(state: AppState, session_id: uuid.UUID, agent: LiveAgent) -> None:
    async with state.db.transaction() as db:
        await claim_and_record(db, session_id, ("created",), "connecting", "starting the agent process")
    error: str | None = None
    try:
        await agent.wait_ready()
    except AgentStartError as exc:
        error = str(exc)[:2000]
    async with state.db.transaction() as db:
        if error is None:
            await claim_and_record(db, session_id, ("connecting",), "active", "agent process ready")
            return
        s = await repo.get_session(db, session_id)
        if s is not None:
            s.error_message = error
        await claim_and_record(db, session_id, ("connecting",), "failed", "agent process failed to start")
