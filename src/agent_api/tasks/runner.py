"""Running a task execution: a fresh agent session, one turn under the task's timeout, then its report.

`queued -> running -> completed | failed | timed_out | cancelled`; the row records the session, result, cost,
duration and error. Executions run in the process that created them (the embedded dispatcher).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import webhook_outbox
from agent_api.agent_settings import permission_policy, seconds_text
from agent_api.db import after_commit
from agent_api.errors import AppError, Conflict, ValidationFailed
from agent_api.event_log import claim_and_record
from agent_api.models import PermissionRequest, Task, TaskExecution, Turn, User
from agent_api.models.base import utcnow
from agent_api.monitoring.budgets import ensure_within_budget
from agent_api.reports import service as report_service
from agent_api.sessions import service as session_service
from agent_api.state import AppState
from agent_api.tasks import prompt as prompts
from agent_api.tasks import repository as repo
from agent_api.tasks.service import session_body
from agent_api.turns import service as turns_service

log = logging.getLogger("agent_api.tasks")
UNFINISHED = ("pending", "queued", "running")


def render_prompt(task: Task, variables: dict[str, Any]) -> str:
    try:
        return prompts.render(task.prompt_template, {**task.variables, **variables})
    except prompts.MissingVariables as exc:
        raise ValidationFailed(
            f"Missing value for prompt variable(s): {exc}", code="missing_variables", details={"missing": exc.names}
        ) from None


async def create_execution(
    db: AsyncSession,
    task: Task,
    variables: dict[str, Any],
    trigger: str,
) -> TaskExecution:
    """A queued execution for a manual or API run (the prompt rendered now, so a missing variable is a 422)."""
    prompt = render_prompt(task, variables)
    execution = TaskExecution(
        id=uuid.uuid4(),
        task_id=task.id,
        user_id=task.user_id,
        status="queued",
        trigger_type=trigger,
        variables=variables,
        prompt=prompt,
        created_at=utcnow(),
    )
    db.add(execution)
    await repo.count_execution(db, task.id)
    await db.flush()
    return execution


def submit(db: AsyncSession, state: AppState, execution: TaskExecution) -> None:
    """Run the execution once the transaction that queued it commits."""
    execution_id = execution.id
    after_commit(db, lambda: state.dispatcher.submit_execution(execution_id))


async def _finish(
    db: AsyncSession, execution: TaskExecution, status: str, *, code: str | None = None, error: str | None = None
) -> None:
    # A cancel that arrived while the execution ran has already set the final status (and announced it).
    if execution.status not in UNFINISHED:
        status = execution.status
        announce = False
    else:
        announce = True
    execution.status = status
    execution.error_code = code if execution.error_code is None else execution.error_code
    execution.error_message = (error or "")[:4000] or execution.error_message
    execution.finished_at = utcnow()
    if execution.started_at is not None:
        execution.duration_ms = int((execution.finished_at - execution.started_at).total_seconds() * 1000)
    if announce:
        await webhook_outbox.emit(
            db,
            execution.user_id,
            "task_execution.completed" if status == "completed" else "task_execution.failed",
            {
                "execution_id": str(execution.id),
                "task_id": str(execution.task_id),
                "session_id": None if execution.session_id is None else str(execution.session_id),
                "status": status,
                "trigger_type": execution.trigger_type,
                "error_code": execution.error_code,
                "duration_ms": execution.duration_ms,
                "total_cost_usd": execution.total_cost_usd,
                "path": f"{webhook_outbox.API}/tasks/executions/{execution.id}",
            },
        )


async def _start(state: AppState, execution_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, int] | None:
    """Create the session and its first turn; None when the execution ended (or was cancelled) before it started."""
    async with state.db.transaction() as db:
        # Compare-and-set: a cancel that got in first wins, and one that comes later sees `running`.
        if not await repo.claim_queued(db, execution_id, utcnow()):
            return None
        execution = await db.get(TaskExecution, execution_id, populate_existing=True)
        assert execution is not None
        task = await db.get(Task, execution.task_id)
        user = await db.get(User, execution.user_id)
        assert task is not None and user is not None
        timeout = task.timeout_seconds
        try:
            # Checked before the session exists, so a refused run leaves no session behind.
            await ensure_within_budget(db, state, user.id)
            created = await session_service.create_session(db, state, user, session_body(task, execution))
            sent = await session_service.send_message(
                db, state, user, created.session, execution.prompt, count_rate=False
            )
        except AppError as exc:
            await _finish(db, execution, "failed", code=exc.code, error=exc.message)
            return None
        execution.session_id = created.session.id
        return created.session.id, sent.turn.id, user.id, timeout


async def run_execution(state: AppState, execution_id: uuid.UUID) -> None:
    started = time.monotonic()
    session_id: uuid.UUID | None = None
    try:
        begun = await _start(state, execution_id)
        if begun is None:
            return
        session_id, turn_id, _user_id, timeout = begun
        dispatcher = state.dispatcher
        if await _was_cancelled(state, execution_id):  # cancelled while the turn was being set up
            await dispatcher.interrupt(session_id)
        timed_out = not await dispatcher.wait_turn(session_id, max(0.0, timeout - (time.monotonic() - started)))
        if timed_out:
            await dispatcher.interrupt(session_id)
            await dispatcher.wait_turn(session_id, 30)
        await _complete(state, execution_id, session_id, turn_id, timed_out)
    except asyncio.CancelledError:
        await _record_crash(state, execution_id, "shutting_down", "the server shut down during the execution")
        raise
    except Exception as exc:
        log.exception("task execution %s failed", execution_id)
        await _record_crash(state, execution_id, "internal_error", str(exc) or type(exc).__name__)
    finally:
        if session_id is not None:
            await state.dispatcher.stop_agent(session_id)


async def _was_cancelled(state: AppState, execution_id: uuid.UUID) -> bool:
    async with state.db.transaction(readonly=True) as db:
        execution = await db.get(TaskExecution, execution_id)
        return execution is not None and execution.status == "cancelled"


async def _complete(
    state: AppState, execution_id: uuid.UUID, session_id: uuid.UUID, turn_id: uuid.UUID, timed_out: bool
) -> None:
    """The execution's outcome and its report, visible together; a report that fails cannot undo the outcome."""
    async with state.db.transaction() as db:
        execution = await db.get(TaskExecution, execution_id, with_for_update=True)
        turn = await db.get(Turn, turn_id)
        task = await db.get(Task, execution.task_id) if execution else None
        if execution is None or turn is None or task is None:
            return
        execution.total_cost_usd = float(turn.cost_usd or 0)
        execution.result_data = {
            "result": turn.result,
            "is_error": turn.is_error,
            "turn_status": turn.status,
            "usage": turn.usage,
            "num_turns": turn.num_turns,
        }
        unanswered = await turns_service.timed_out_denials(db, turn_id)
        if timed_out:
            status, code, error = "timed_out", "timed_out", f"the task did not finish within {task.timeout_seconds} s"
        elif turn.status == "interrupted":
            status, code, error = "cancelled", "interrupted", "the turn was interrupted"
        elif unanswered:
            # Nobody watches a task's turn: a call denied for want of an answer means the work was not done,
            # whatever the agent said after it.
            status, code, error = "failed", "permission_timeout", await _unanswered(db, state, session_id, unanswered)
        elif turn.status == "completed" and not turn.is_error:
            status, code, error = "completed", None, None
        else:
            status, code, error = "failed", "turn_failed", "; ".join(turn.errors or []) or turn.result or "turn failed"
        await _finish(db, execution, status, code=code, error=error)
        await claim_and_record(db, session_id, ("active", "failed"), "completed", "task execution finished")
        if task.generate_report:
            await _report(db, state, execution, session_id, task)


async def _unanswered(
    db: AsyncSession, state: AppState, session_id: uuid.UUID, requests: list[PermissionRequest]
) -> str:
    s = await session_service.get_session(db, session_id)
    waited = seconds_text(permission_policy(s, state.settings.permission_timeout_s).timeout_s)
    tools = list(dict.fromkeys(r.tool_name for r in requests))
    more = f" ({len(requests)} calls)" if len(requests) > 1 else ""
    return (
        f"{', '.join(tools)} needed a permission decision and nobody answered within {waited}{more}; "
        "denied by the session's on_permission_timeout (deny). Set permission_mode, allowed_tools or "
        'on_permission_timeout: "allow" on the task for unattended runs'
    )


async def _report(
    db: AsyncSession, state: AppState, execution: TaskExecution, session_id: uuid.UUID, task: Task
) -> None:
    try:
        async with db.begin_nested():  # a failure rolls back the report alone
            report = await report_service.create_report(
                db,
                state,
                session_id,
                user_id=execution.user_id,
                title=task.name,
                task_id=task.id,
                task_execution_id=execution.id,
                error=execution.error_message,
            )
    except Exception as exc:
        log.exception("the report of task execution %s failed", execution.id)
        execution.result_data = {**(execution.result_data or {}), "report_error": str(exc)[:1000]}
        return
    execution.report_id = report.id


async def _record_crash(state: AppState, execution_id: uuid.UUID, code: str, error: str) -> None:
    async with state.db.transaction() as db:
        execution = await db.get(TaskExecution, execution_id, with_for_update=True)
        if execution is not None and execution.status in UNFINISHED:
            await _finish(db, execution, "failed", code=code, error=error)


async def cancel(db: AsyncSession, execution: TaskExecution) -> TaskExecution:
    """Mark a queued or running execution cancelled (compare-and-set: it wins or finds the execution ended).
    The caller commits, then the dispatcher stops its turn; the report still follows."""
    if not await repo.cancel_unfinished(db, execution.id):
        await db.refresh(execution)
        raise Conflict(f"The execution already ended ({execution.status})", code="execution_finished")
    await db.refresh(execution)
    await _finish(db, execution, "cancelled", code="cancelled", error="cancelled by the user")
    return execution


async def recover_after_restart(state: AppState) -> int:
    """Executions a restart cut short are failed with a clear reason; their sessions are recovered by sessions."""
    async with state.db.transaction() as db:
        stuck = await repo.unfinished_executions(db)
        for execution in stuck:
            if state.dispatcher.runs_execution(execution.id):
                continue
            await _finish(
                db, execution, "failed", code="interrupted", error="the server restarted during the execution"
            )
    return len(stuck)


def slot_values(task: Task, slot: datetime, status: str, prompt: str, error: str | None) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "task_id": task.id,
        "user_id": task.user_id,
        "status": status,
        "trigger_type": "scheduled",
        "scheduled_for": slot,
        "variables": {},
        "prompt": prompt,
        "error_code": None if error is None else ("missed_slot" if status == "skipped" else "missing_variables"),
        "error_message": error,
        "total_cost_usd": 0,
        "created_at": utcnow(),
        "finished_at": utcnow() if status in ("skipped", "failed") else None,
    }
