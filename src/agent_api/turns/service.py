"""Starting a turn: the claim on the session, the user's message and the turn row, in the caller's transaction;
the run itself is handed to the dispatcher once that transaction commits."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.db import after_commit
from agent_api.errors import Conflict, ServiceUnavailable
from agent_api.event_log import append_event, claim_and_record, message_payload
from agent_api.models import Message, PermissionRequest, Session, Turn, User
from agent_api.models.base import utcnow
from agent_api.monitoring.budgets import ensure_within_budget
from agent_api.rate_limits import check_user_rate
from agent_api.state import AppState
from agent_api.turns import accounting, runner
from agent_api.turns import repository as repo

log = logging.getLogger("agent_api.turns")

QUERYABLE = ("created", "connecting", "active", "failed")
# A turn in one of these has not finished yet.
UNFINISHED = ("queued", "running")
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


async def start_turn(
    db: AsyncSession,
    state: AppState,
    user: User,
    s: Session,
    text: str,
    *,
    count_rate: bool = True,
    at_once: bool = False,
) -> tuple[Turn, Message]:
    """Claim the session for a turn and record the user's message; the turn runs once the caller's transaction
    commits, and never if it rolls back.

    `count_rate=False` for turns no request asked for directly (task executions count as `execute`). `at_once`
    refuses (429) a turn that would wait for a free agent slot of the user's instead of queueing it."""
    if state.dispatcher.draining:
        raise ServiceUnavailable("The server is shutting down", code="shutting_down")
    if s.status not in QUERYABLE:
        raise _refuse(s.status)
    if at_once:
        runner.ensure_agent_slot(state, user.id, s.id)
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
    session_id, turn_id, user_id = s.id, turn.id, user.id
    after_commit(db, lambda: state.dispatcher.submit_turn(session_id, turn_id, user_id))
    return turn, message


def take_spare_agent(state: AppState, s: Session) -> None:
    """Before a new session is first flushed: adopt an agent process started ahead, when one fits (`runtime.pool`)."""
    runner.take_spare(state, s)


def warm(db: AsyncSession, state: AppState, s: Session) -> None:
    """Start the session's agent process once the session is committed, so its first message does not wait."""
    session_id = s.id
    after_commit(db, lambda: state.dispatcher.warm_agent(session_id))


async def get_turn(db: AsyncSession, turn_id: uuid.UUID) -> Turn | None:
    return await repo.get_turn(db, turn_id)


async def recover_after_restart(db: AsyncSession) -> int:
    """Turns a crash left running: marked interrupted and billed for what their model calls had used."""
    turns = await repo.running_turns(db)
    for turn in turns:
        await accounting.record_result(db, turn.session_id, turn.id, turn.user_id, None, interrupted=True)
        turn.errors = [*(turn.errors or []), "interrupted by a server restart"]
    return len(turns)


async def answer_permission(db: AsyncSession, request_id: uuid.UUID, decision: str, reason: str) -> bool:
    """A person's answer on the request's row, if it is still pending; the waiting turn hears of it through the
    dispatcher once this commits."""
    return await repo.decide_permission(db, request_id, decision, "user", reason)


async def timed_out_denials(db: AsyncSession, turn_id: uuid.UUID) -> list[PermissionRequest]:
    """The turn's calls that were denied because nobody answered their permission request in time."""
    return await repo.timed_out_denials(db, turn_id)


async def deny_pending(db: AsyncSession, session_id: uuid.UUID, decided_by: str, reason: str) -> None:
    """Settle every request of the session still waiting for a person (pause, restart)."""
    await repo.deny_pending(db, session_id, decided_by, reason)


def ensure_agent_slot(state: AppState, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    runner.ensure_agent_slot(state, user_id, session_id)
