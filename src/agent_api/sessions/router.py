"""`/sessions`: the 17 session endpoints of the inventory, plus interrupt and permission answers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse

from agent_api import idempotency
from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB, State
from agent_api.errors import NotFound, PayloadTooLarge
from agent_api.monitoring import service as monitoring_service
from agent_api.monitoring.budgets import ensure_within_budget
from agent_api.monitoring.schemas import CurrentMetrics
from agent_api.pagination import Page, Pagination, fetch_page
from agent_api.rate_limits import check_user_rate
from agent_api.runtime import workdir
from agent_api.sessions import repository as repo
from agent_api.sessions import service, turns
from agent_api.sessions.deps import OwnedSession
from agent_api.sessions.schemas import (
    ArchiveRead,
    ForkRequest,
    HookRunRead,
    MessageRead,
    MetricsSnapshotRead,
    PermissionAnswer,
    PermissionRead,
    QueryAccepted,
    QueryCompleted,
    QueryRequest,
    ResumeRequest,
    SessionCreate,
    SessionRead,
    SessionStatus,
    ToolCallRead,
)
from agent_api.state import AppState

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.post("", response_model=SessionRead, status_code=status.HTTP_201_CREATED)
async def create_session(body: SessionCreate, user: CurrentUser, db: DB, state: State) -> SessionRead:
    created = await service.create_session(db, state, user, body)
    s = created.session
    if created.initial_message:
        turn, _ = await turns.start_query(db, state, user, s, created.initial_message)
        await db.commit()
        turns.dispatch(state, s.id, turn.id, user.id)
        return SessionRead.model_validate(s)
    # Published before the agent starts, so its status updates find the row.
    await db.commit()
    turns.warm(state, s)
    return SessionRead.model_validate(s)


@router.get("", response_model=Page[SessionRead])
async def list_sessions(
    user: CurrentUser,
    db: DB,
    params: Pagination,
    status_filter: Annotated[SessionStatus | None, Query(alias="status")] = None,
    is_fork: bool | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Page[SessionRead]:
    stmt = repo.list_owned(
        user.id,
        status=status_filter,
        is_fork=is_fork,
        search=search,
        created_after=created_after,
        created_before=created_before,
    )
    rows, total = await fetch_page(db, stmt, params)
    return Page[SessionRead].build([SessionRead.model_validate(r) for r in rows], total, params)


@router.get("/{session_id}", response_model=SessionRead)
async def get_session(s: OwnedSession) -> SessionRead:
    return SessionRead.model_validate(s)


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(s: OwnedSession, db: DB, state: State) -> None:
    keep_archive = await service.delete_session(db, s)
    # Committed first: the interrupted turn records its end, which needs the database.
    await db.commit()
    await service.release(state, s.id, keep_archive=keep_archive)


@router.post("/{session_id}/query", response_model=QueryAccepted | QueryCompleted, status_code=status.HTTP_202_ACCEPTED)
async def query(
    s: OwnedSession,
    body: QueryRequest,
    request: Request,
    user: CurrentUser,
    db: DB,
    state: State,
    key: idempotency.IdempotencyKey = None,
) -> Any:
    claim = await idempotency.begin(db, user.id, f"query:{s.id}", key, request, body)
    if isinstance(claim, JSONResponse):
        return claim
    if body.fork:
        # Refusals first: a fork copies the working directory, which a rolled-back request would leave behind.
        check_user_rate(state, user.id, "query")
        await ensure_within_budget(db, state, user.id)
    target = await service.fork(db, state, user, s, ForkRequest()) if body.fork else s
    turn, message = await turns.start_query(db, state, user, target, body.message, count_rate=not body.fork)
    accepted = QueryAccepted(id=target.id, message_id=message.id, turn_id=turn.id, status="processing")
    await idempotency.finish(db, claim, 202, accepted, in_progress=body.wait)
    await db.commit()
    task = turns.dispatch(state, target.id, turn.id, user.id)
    if not body.wait:
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
    try:
        # Shielded: a client that gives up waiting does not cancel the turn.
        await asyncio.wait_for(asyncio.shield(task), state.settings.query_wait_timeout_s)
    except (TimeoutError, asyncio.CancelledError) as exc:
        # The turn goes on; a retry with the key gets this answer, never a second turn.
        await asyncio.shield(_remember_in_fresh_transaction(state, claim, 202, accepted))
        if isinstance(exc, asyncio.CancelledError):
            raise
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
    async with state.db.transaction() as fresh:
        done = await repo.get_turn(fresh, turn.id)
        assert done is not None
        completed = QueryCompleted(
            **accepted.model_dump(exclude={"status"}),
            status=(await repo.get_session(fresh, target.id)).status,  # type: ignore[union-attr]
            result=done.result,
            is_error=done.is_error or done.status != "completed",
            cost_usd=float(done.cost_usd or 0),
            cost_estimated=done.cost_estimated,
            usage=done.usage,
            num_turns=done.num_turns,
            duration_ms=done.duration_ms,
            turn_status=done.status,
        )
        await idempotency.finish(fresh, claim, 200, completed)
    return JSONResponse(completed.model_dump(mode="json"), status_code=200)


async def _remember_in_fresh_transaction(
    state: AppState, claim: idempotency.ClaimedKey | None, status_code: int, body: Any
) -> None:
    if claim is not None:
        async with state.db.transaction() as fresh:
            await idempotency.finish(fresh, claim, status_code, body)


@router.post("/{session_id}/interrupt")
async def interrupt(s: OwnedSession, db: DB, state: State) -> dict[str, Any]:
    # Nothing to write here: end the transaction, so the turn can record its end while we wait on the agent.
    await db.commit()
    interrupted = await service.interrupt(state, s.id)
    return {"id": str(s.id), "interrupted": interrupted}


@router.post("/{session_id}/pause", response_model=SessionRead)
async def pause(s: OwnedSession, db: DB, state: State) -> SessionRead:
    paused = SessionRead.model_validate(await service.pause(db, s))
    # Committed first: the interrupted turn records its end, which needs the database.
    await db.commit()
    await service.stop_agent(state, s.id)
    return paused


@router.post("/{session_id}/resume", response_model=SessionRead)
async def resume(
    s: OwnedSession, user: CurrentUser, db: DB, state: State, body: Annotated[ResumeRequest | None, Body()] = None
) -> Any:
    if body is not None and body.fork:
        child = await service.fork(db, state, user, s, ForkRequest())
        return JSONResponse(SessionRead.model_validate(child).model_dump(mode="json"), status_code=201)
    return SessionRead.model_validate(await service.resume(db, state, s))


@router.post("/{session_id}/fork", response_model=SessionRead, status_code=status.HTTP_201_CREATED)
async def fork(
    s: OwnedSession,
    request: Request,
    user: CurrentUser,
    db: DB,
    state: State,
    key: idempotency.IdempotencyKey = None,
    body: Annotated[ForkRequest | None, Body()] = None,
) -> Any:
    body = body or ForkRequest()
    claim = await idempotency.begin(db, user.id, f"fork:{s.id}", key, request, body)
    if isinstance(claim, JSONResponse):
        return claim
    child = SessionRead.model_validate(await service.fork(db, state, user, s, body))
    await idempotency.finish(db, claim, 201, child)
    return child


@router.post("/{session_id}/archive", response_model=ArchiveRead, status_code=status.HTTP_201_CREATED)
async def archive(s: OwnedSession, db: DB, state: State) -> ArchiveRead:
    return ArchiveRead.model_validate(await service.archive(db, state, s))


@router.get("/{session_id}/archive", response_model=ArchiveRead)
async def get_archive(s: OwnedSession, db: DB) -> ArchiveRead:
    record = await repo.get_archive(db, s.id)
    if record is None:
        raise NotFound("This session has no archive", code="archive_not_found")
    return ArchiveRead.model_validate(record)


@router.get("/{session_id}/messages", response_model=Page[MessageRead])
async def messages(s: OwnedSession, db: DB, params: Pagination, turn_id: uuid.UUID | None = None) -> Page[MessageRead]:
    rows, total = await fetch_page(db, repo.messages_of(s.id, turn_id), params)
    return Page[MessageRead].build([MessageRead.model_validate(r) for r in rows], total, params)


@router.get("/{session_id}/tool-calls", response_model=Page[ToolCallRead])
async def tool_calls(
    s: OwnedSession, db: DB, params: Pagination, turn_id: uuid.UUID | None = None
) -> Page[ToolCallRead]:
    rows, total = await fetch_page(db, repo.tool_calls_of(s.id, turn_id), params)
    return Page[ToolCallRead].build([ToolCallRead.model_validate(r) for r in rows], total, params)


@router.get("/{session_id}/hooks", response_model=Page[HookRunRead])
async def hooks(s: OwnedSession, db: DB, params: Pagination) -> Page[HookRunRead]:
    rows, total = await fetch_page(db, repo.hook_runs_of(s.id), params)
    return Page[HookRunRead].build([HookRunRead.model_validate(r) for r in rows], total, params)


@router.get("/{session_id}/permissions", response_model=Page[PermissionRead])
async def permissions(s: OwnedSession, db: DB, params: Pagination) -> Page[PermissionRead]:
    rows, total = await fetch_page(db, repo.permissions_of(s.id), params)
    return Page[PermissionRead].build([PermissionRead.model_validate(r) for r in rows], total, params)


@router.post("/{session_id}/permissions/{request_id}", response_model=PermissionRead)
async def answer_permission(
    s: OwnedSession, request_id: uuid.UUID, body: PermissionAnswer, db: DB, state: State
) -> PermissionRead:
    request = await service.answer_permission(db, state, s, request_id, body)
    await db.commit()
    service.wake_permission_waiter(state, request)
    return PermissionRead.model_validate(request)


@router.get("/{session_id}/metrics/snapshots", response_model=Page[MetricsSnapshotRead])
async def metrics_snapshots(s: OwnedSession, db: DB, params: Pagination) -> Page[MetricsSnapshotRead]:
    rows, total = await fetch_page(db, repo.snapshots_of(s.id), params)
    return Page[MetricsSnapshotRead].build([MetricsSnapshotRead.model_validate(r) for r in rows], total, params)


@router.get("/{session_id}/metrics/current", response_model=CurrentMetrics)
async def metrics_current(s: OwnedSession, db: DB, state: State) -> CurrentMetrics:
    return await monitoring_service.current_metrics(db, state, s)


@router.get("/{session_id}/workdir/download", response_class=StreamingResponse)
async def download_workdir(s: OwnedSession, state: State) -> StreamingResponse:
    path = service.workdir_of(state, s.id)
    if not path.is_dir():
        raise NotFound("The working directory is not present (archived or deleted)", code="workdir_not_found")
    limit = state.settings.max_workdir_bytes
    try:
        await asyncio.to_thread(workdir.check_size, path, limit)
    except workdir.WorkdirTooLarge as exc:
        raise PayloadTooLarge("The working directory is too large to download", code="workdir_too_large") from exc
    return StreamingResponse(
        workdir.stream_tar_gz(path, limit),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{s.id}-workdir.tar.gz"'},
    )
