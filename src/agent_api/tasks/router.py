"""`/tasks`: the 8 task endpoints of the inventory, plus cancelling an execution."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import idempotency
from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB, State, end_transaction
from agent_api.errors import NotFound
from agent_api.models import User
from agent_api.models.task import EXECUTION_STATUSES
from agent_api.monitoring.budgets import ensure_within_budget
from agent_api.pagination import Page, Pagination, paged
from agent_api.rate_limits import check_user_rate
from agent_api.tasks import repository as repo
from agent_api.tasks import runner, service
from agent_api.tasks.deps import OwnedExecution, OwnedTask
from agent_api.tasks.schemas import ExecuteRequest, ExecutionRead, TaskCreate, TaskRead, TaskUpdate

router = APIRouter(prefix="/tasks", tags=["tasks"])
ExecutionStatus = Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(EXECUTION_STATUSES) + ")$")]


@router.get("/executions/{execution_id}", response_model=ExecutionRead)
async def get_execution(execution: OwnedExecution) -> ExecutionRead:
    """One of the caller's executions: status, trigger, session, report, result, error, duration and
    cost; still readable after its task is deleted. 404 for another user's execution."""
    return ExecutionRead.model_validate(execution)


@router.post("/executions/{execution_id}/cancel", response_model=ExecutionRead)
async def cancel_execution(execution: OwnedExecution, db: DB, state: State) -> ExecutionRead:
    """Cancel a queued or running execution (a running turn is interrupted); 409 once it has ended."""
    cancelled = ExecutionRead.model_validate(await runner.cancel(db, execution))
    await end_transaction(db)  # the interrupted turn records its end, which needs the database
    await state.dispatcher.cancel_execution(execution.id, execution.session_id)
    return cancelled


@router.post("", response_model=TaskRead, status_code=status.HTTP_201_CREATED)
async def create_task(body: TaskCreate, user: CurrentUser, db: DB) -> TaskRead:
    """Create a task (201). `prompt_template` may hold `{{variable}}` placeholders; 422 when the cron or time
    zone is invalid, or the template or an MCP server is unknown."""
    return TaskRead.model_validate(await service.create(db, user, body))


@router.get("", response_model=Page[TaskRead])
async def list_tasks(
    user: CurrentUser,
    db: DB,
    params: Pagination,
    is_scheduled: bool | None = None,
    tag: Annotated[str | None, Query(max_length=50)] = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[TaskRead]:
    """The caller's tasks, newest first; filters `is_scheduled`, `tag` and `search` (part of the name)."""
    stmt = repo.list_owned(user.id, is_scheduled=is_scheduled, tag=tag, search=search)
    return await paged(db, stmt, params, TaskRead)


@router.get("/{task_id}", response_model=TaskRead)
async def get_task(task: OwnedTask) -> TaskRead:
    """One of the caller's tasks; 404 for another user's task or a deleted one."""
    return TaskRead.model_validate(task)


@router.patch("/{task_id}", response_model=TaskRead)
async def update_task(task: OwnedTask, body: TaskUpdate, user: CurrentUser, db: DB) -> TaskRead:
    """Change the fields sent; a changed schedule moves `next_run_at`. 404 for another user's task; 422 for
    an invalid cron or time zone, a null required field, or an unknown template or MCP server."""
    return TaskRead.model_validate(await service.update(db, user, task, body))


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_task(task: OwnedTask, db: DB) -> None:
    """Delete a task and stop its schedule (204); its executions and reports stay readable. 404 for another
    user's task."""
    await service.soft_delete(db, task)


@router.post("/{task_id}/execute", response_model=ExecutionRead, status_code=status.HTTP_202_ACCEPTED)
async def execute_task(
    task: OwnedTask,
    request: Request,
    user: CurrentUser,
    db: DB,
    state: State,
    key: idempotency.IdempotencyKey = None,
    body: ExecuteRequest | None = None,
) -> Any:
    """Run the task now with `variables` over its defaults: 202 with the queued execution. 422
    `missing_variables`, 402 `budget_exceeded`, 429 over the rate limit; `Idempotency-Key` runs it once per key
    (a retry gets 202 with the execution as it is now)."""
    body = body or ExecuteRequest()
    claim = await idempotency.begin(db, user.id, f"execute:{task.id}", key, request, body)
    if isinstance(claim, idempotency.Replay):
        return await _current_execution(db, user, claim)
    check_user_rate(state, user.id, "execute")
    await ensure_within_budget(db, state, user.id)
    execution = await runner.create_execution(db, task, body.variables, "manual")
    accepted = ExecutionRead.model_validate(execution)
    await idempotency.finish(db, claim, 202, accepted)
    runner.submit(db, state, execution)
    return accepted


async def _current_execution(db: AsyncSession, user: User, replay: idempotency.Replay) -> JSONResponse:
    """A keyed retry: the same execution, never a second one, with its status now rather than `queued` again."""
    try:
        execution_id = uuid.UUID(str(replay.stored.get("id")))
        execution = await service.get_owned_execution(db, user, execution_id)
    except (ValueError, NotFound):
        return replay
    body = ExecutionRead.model_validate(execution).model_dump(mode="json")
    return JSONResponse(body, status_code=replay.stored_status, headers={"Idempotent-Replay": "true"})


@router.get("/{task_id}/executions", response_model=Page[ExecutionRead])
async def list_executions(
    task: OwnedTask, user: CurrentUser, db: DB, params: Pagination, status_filter: ExecutionStatus = None
) -> Page[ExecutionRead]:
    """The task's executions, newest first; `?status=` filters. 404 for another user's task."""
    return await paged(db, repo.executions_of(user.id, task.id, status_filter), params, ExecutionRead)
