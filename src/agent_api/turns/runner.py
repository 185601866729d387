"""Running a turn on the agent runtime (the dispatcher's job), and warming a new session's agent."""

from __future__ import annotations

import logging
import uuid

from agent_api.errors import RateLimited
from agent_api.event_log import claim_and_record
from agent_api.mcp_servers import service as mcp_service
from agent_api.models import Session
from agent_api.models.base import utcnow
from agent_api.monitoring.budgets import agent_budget_fits, turn_allowance
from agent_api.runtime import workdir
from agent_api.runtime.agent import AgentSpec, AgentStartError, LiveAgent
from agent_api.state import AppState
from agent_api.turns import repository as repo

log = logging.getLogger("agent_api.turns")

AGENT_SLOT_RETRY_AFTER_S = 5


def spec_for(state: AppState, s: Session) -> AgentSpec:
    """What the session asks of its agent process."""
    options = s.sdk_options or {}
    fork_pending = s.sdk_session_id is None and s.fork_from_sdk_session_id is not None
    return AgentSpec(
        session_id=s.id,
        cwd=workdir.session_workdir(state.settings.data_dir, s.id),
        system_prompt=s.system_prompt,
        permission_mode=s.permission_mode,
        allowed_tools=list(s.allowed_tools or []),
        disallowed_tools=list(s.disallowed_tools or []),
        blocked_commands=list(s.blocked_commands or []),
        model=options.get("model"),
        max_turns=options.get("max_turns"),
        max_thinking_tokens=options.get("max_thinking_tokens"),
        fallback_model=options.get("fallback_model"),
        resume=s.fork_from_sdk_session_id if fork_pending else s.sdk_session_id,
        fork_session=fork_pending,
        resume_session_at=s.fork_at_message_uuid if fork_pending else None,
        resume_from=s.parent_session_id if fork_pending else None,
        owner=s.user_id,
    )


def spare_spec(state: AppState) -> AgentSpec:
    """A spare agent's spec: a new session's defaults under an id no session has yet, its working directory made."""
    session_id = uuid.uuid4()
    cwd = workdir.session_workdir(state.settings.data_dir, session_id)
    workdir.create_workdir(cwd)
    return AgentSpec(session_id=session_id, cwd=cwd)


def take_spare(state: AppState, s: Session) -> None:
    """Give a session being created a spare agent that was started with the options it needs: the session takes
    the spare's id (and with it the running process and its working directory)."""
    pool = state.agents
    if pool is None or s.mcp_server_ids or s.sdk_session_id or s.fork_from_sdk_session_id:
        return
    spare_id = pool.claim_spare(spec_for(state, s))
    if spare_id is not None:
        s.id = spare_id


async def run_turn(state: AppState, session_id: uuid.UUID, turn_id: uuid.UUID, user_id: uuid.UUID) -> None:
    # It handles the SDK's messages, so it imports the SDK: loaded with the first turn, not at start-up.
    from agent_api.turns.recorder import TurnRecorder

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
        recorder = TurnRecorder(state, session_id, turn_id, user_id, session=s)
    if state.dispatcher.take_interrupt(session_id):
        await recorder.finish(None, interrupted=True)
        return
    try:
        async with pool.user_slot(spec):
            if state.dispatcher.take_interrupt(session_id):  # came while it waited for a slot of the user's
                await recorder.finish(None, interrupted=True)
                return
            # Outside the transaction (it may resolve DNS), once the turn has a slot: the MCP relay's addresses
            # it hands out are fresh when the agent starts.
            spec.mcp_servers = await mcp_service.sdk_configs(state, attached_mcp)
            await _apply_budget(state, spec, session_spent)
            if state.dispatcher.take_interrupt(session_id):  # came while a budget restart closed the old agent
                await recorder.finish(None, interrupted=True)
                return
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


async def warm_agent(state: AppState, session_id: uuid.UUID) -> None:
    """Start a new session's agent process (with its MCP servers' configs), and record how the start went."""
    async with state.db.transaction(readonly=True) as db:
        s = await repo.get_session(db, session_id)
        if s is None or s.status != "created":
            return  # deleted, or a first message got there first
        spec = spec_for(state, s)
        attached = await mcp_service.load_attached(db, state, s.user_id, list(s.mcp_server_ids or []))
    spec.mcp_servers = await mcp_service.sdk_configs(state, attached)
    pool = state.require_agents()
    if not pool.user_slot_free(spec.owner, spec.session_id):
        return  # every agent of the user's is busy: this one starts with the session's first turn
    await _record_warm_up(state, session_id, pool.warm(spec))


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


def ensure_agent_slot(state: AppState, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """For a turn asked to start at once: 429 when every live agent the user may hold is busy."""
    pool = state.agents
    if pool is not None and not pool.user_slot_free(user_id, session_id):
        limit = state.settings.max_live_sessions_per_user
        raise RateLimited(
            AGENT_SLOT_RETRY_AFTER_S,
            f"All {limit} live agents you may hold are busy; retry when one finishes, or send without wait",
        )
