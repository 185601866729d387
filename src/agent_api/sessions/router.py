"""`/sessions`: the 17 session endpoints of the inventory, plus interrupt, permission answers and the working
directory's files."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import idempotency, security_headers
from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB, State, end_transaction
from agent_api.errors import NotFound, PayloadTooLarge
from agent_api.monitoring import service as monitoring_service
from agent_api.monitoring.schemas import CurrentMetrics
from agent_api.pagination import Page, Pagination, paged_rows
from agent_api.runtime import workdir, workdir_files
from agent_api.sessions import answers, files, service
from agent_api.sessions import repository as repo
from agent_api.sessions.deps import DownloadableSession, OwnedSession
from agent_api.sessions.schemas import (
    ArchiveRead,
    FileListRead,
    ForkRequest,
    HookRunRead,
    MessageRead,
    MetricsSnapshotRead,
    PermissionAnswer,
    PermissionAnswered,
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
    """Create a session (from a template when `template_id` is given). Its agent process starts in the background,
    or the template's opening message is sent as its first query."""
    created = await service.create_session(db, state, user, body)
    await service.start(db, state, user, created)
    return SessionRead.model_validate(created.session)


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
    """The caller's sessions, newest first; filters `status`, `is_fork`, `search` (name), `created_after`, `created_before`."""
    stmt = repo.list_owned(
        user.id,
        status=status_filter,
        is_fork=is_fork,
        search=search,
        created_after=created_after,
        created_before=created_before,
    )
    return await paged_rows(db, stmt, params, SessionRead)


@router.get("/{session_id}", response_model=SessionRead)
async def get_session(s: OwnedSession) -> SessionRead:
    """One of the caller's sessions with its counters, tokens and cost; 404 for anyone else's."""
    return SessionRead.model_validate(s)


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(s: OwnedSession, db: DB, state: State) -> None:
    """Delete the session: interrupt a running turn, end the agent, remove the working directory (and the archive,
    unless the session was archived)."""
    keep_archive = await service.delete_session(db, s)
    await end_transaction(db)  # the interrupted turn records its end, which needs the database
    await service.release(state, s.id, keep_archive=keep_archive)


@router.post(
    "/{session_id}/query",
    response_model=QueryAccepted | QueryCompleted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": QueryCompleted, "description": "With `wait: true`: the finished turn"}},
)
async def query(
    s: OwnedSession,
    body: QueryRequest,
    request: Request,
    user: CurrentUser,
    db: DB,
    state: State,
    key: idempotency.IdempotencyKey = None,
) -> Any:
    """Send a message to the session's agent: 202 at once, or with `wait: true` 200 and the finished turn (202
    `waiting` with `pending_permissions` as soon as a person must decide, 202 `processing` when it outlives the wait).
    `fork: true` sends it to a new fork. 409 `session_busy` / `session_paused` / `session_archived`. A turn whose
    user already holds `AGENT_API_MAX_LIVE_SESSIONS_PER_USER` busy agents waits for one of them to finish, or with
    `wait: true` is refused at once with 429 `rate_limited` (`Retry-After`).
    `Idempotency-Key` runs it once: a retry gets the turn as it is now (200 once it has finished; 202 `waiting` or
    `processing` before, waiting again like the first with `wait: true`), never a second turn; 422
    `idempotency_key_reused` for another request, 409 `idempotency_in_progress` while the first still waits."""
    scope = f"query:{s.id}"
    claim = await idempotency.begin(db, user.id, scope, key, request, body)
    if isinstance(claim, idempotency.Replay):
        assert key is not None
        return await _replay_query(db, state, idempotency.ClaimedKey(user.id, scope, key), claim, body.wait)
    sent = await service.send_message(db, state, user, s, body.message, into_fork=body.fork, at_once=body.wait)
    accepted = QueryAccepted(id=sent.session.id, message_id=sent.message.id, turn_id=sent.turn.id, status="processing")
    await idempotency.finish(db, claim, 202, accepted, in_progress=body.wait)
    if not body.wait:
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
    await end_transaction(db)  # the turn records itself as it runs
    try:
        outcome = await state.dispatcher.wait_turn_or_question(sent.session.id, state.settings.query_wait_timeout_s)
    except asyncio.CancelledError:
        # The client left; the turn goes on, and a retry with the key gets this answer, never a second turn.
        await asyncio.shield(_remember_in_fresh_transaction(state, claim, 202, accepted))
        raise
    if outcome != "finished":
        async with state.db.transaction() as fresh:
            unfinished = await service.unfinished_query(fresh, state, accepted)
            await idempotency.finish(fresh, claim, 202, unfinished)
        return JSONResponse(unfinished.model_dump(mode="json"), status_code=202)
    async with state.db.transaction() as fresh:
        completed = await service.completed_query(fresh, accepted)
        await idempotency.finish(fresh, claim, 200, completed)
    return JSONResponse(completed.model_dump(mode="json"), status_code=200)


async def _replay_query(
    db: AsyncSession, state: AppState, key: idempotency.ClaimedKey, replay: idempotency.Replay, wait: bool
) -> JSONResponse:
    """A keyed retry of a query: a 202 is not a final answer, so the answer is the turn's state now (with `wait`, after
    waiting as the first request did); once the turn has finished, its outcome, kept as the key's answer."""
    try:
        accepted = QueryAccepted.model_validate(replay.stored)
    except ValidationError:
        return replay
    if replay.stored_status == 200:
        return replay  # already final
    await end_transaction(db)
    async with state.db.transaction(readonly=True) as fresh:
        status_code, current = await service.query_state(fresh, state, accepted)
    if wait and status_code == 202 and current.status == "processing":
        await state.dispatcher.wait_turn_or_question(accepted.id, state.settings.query_wait_timeout_s)
        async with state.db.transaction(readonly=True) as fresh:
            status_code, current = await service.query_state(fresh, state, accepted)
    if status_code == 200:
        async with state.db.transaction() as fresh:
            await idempotency.finish(fresh, key, status_code, current)
    return JSONResponse(current.model_dump(mode="json"), status_code=status_code, headers={"Idempotent-Replay": "true"})


async def _remember_in_fresh_transaction(
    state: AppState, claim: idempotency.ClaimedKey | None, status_code: int, body: Any
) -> None:
    if claim is not None:
        async with state.db.transaction() as fresh:
            await idempotency.finish(fresh, claim, status_code, body)


@router.post("/{session_id}/interrupt")
async def interrupt(s: OwnedSession, db: DB, state: State) -> dict[str, Any]:
    """Stop the session's current turn (also one still on its way to the agent); the session stays usable."""
    await end_transaction(db)  # the turn records its end while we wait on the agent
    interrupted = await state.dispatcher.interrupt(s.id)
    return {"id": str(s.id), "interrupted": interrupted}


@router.post("/{session_id}/pause", response_model=SessionRead)
async def pause(s: OwnedSession, db: DB, state: State) -> SessionRead:
    """Interrupt a running turn and close the agent process; status `paused` until resumed."""
    paused = SessionRead.model_validate(await service.pause(db, s))
    await end_transaction(db)  # the interrupted turn records its end, which needs the database
    await state.dispatcher.stop_agent(s.id)
    return paused


@router.post(
    "/{session_id}/resume",
    response_model=SessionRead,
    responses={201: {"model": SessionRead, "description": 'With `{"fork": true}`: the new fork'}},
)
async def resume(
    s: OwnedSession, user: CurrentUser, db: DB, state: State, body: Annotated[ResumeRequest | None, Body()] = None
) -> Any:
    """Make a `paused`, `completed` or `archived` session `active` again (an archive is restored); with `{"fork": true}`
    resume into a new fork instead (201)."""
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
    """A new session with this one's settings, conversation (up to `fork_at_message`) and, by default, a copy of its
    files (201); `Idempotency-Key` makes one child per key."""
    body = body or ForkRequest()
    claim = await idempotency.begin(db, user.id, f"fork:{s.id}", key, request, body)
    if isinstance(claim, JSONResponse):
        return claim
    child = SessionRead.model_validate(await service.fork(db, state, user, s, body))
    await idempotency.finish(db, claim, 201, child)
    return child


@router.post("/{session_id}/archive", response_model=ArchiveRead, status_code=status.HTTP_201_CREATED)
async def archive(s: OwnedSession, db: DB, state: State) -> ArchiveRead:
    """Write the working directory to a tar.gz (size, file count, sha256) and mark the session `archived`; 409 while a
    turn runs, 413 over the working-directory size cap."""
    return ArchiveRead.model_validate(await service.archive(db, state, s))


@router.get("/{session_id}/archive", response_model=ArchiveRead)
async def get_archive(s: OwnedSession, db: DB) -> ArchiveRead:
    """The session's archive record; 404 when it has none."""
    record = await repo.get_archive(db, s.id)
    if record is None:
        raise NotFound("This session has no archive", code="archive_not_found")
    return ArchiveRead.model_validate(record)


@router.get("/{session_id}/messages", response_model=Page[MessageRead])
async def messages(s: OwnedSession, db: DB, params: Pagination, turn_id: uuid.UUID | None = None) -> Page[MessageRead]:
    """The session's messages, oldest first; `?turn_id=` keeps one turn's."""
    return await paged_rows(db, repo.messages_of(s.id, turn_id), params, MessageRead)


@router.get("/{session_id}/tool-calls", response_model=Page[ToolCallRead])
async def tool_calls(
    s: OwnedSession, db: DB, params: Pagination, turn_id: uuid.UUID | None = None
) -> Page[ToolCallRead]:
    """The session's tool calls with input, output, status and duration, oldest first; `?turn_id=` keeps one turn's."""
    return await paged_rows(db, repo.tool_calls_of(s.id, turn_id), params, ToolCallRead)


@router.get("/{session_id}/hooks", response_model=Page[HookRunRead])
async def hooks(s: OwnedSession, db: DB, params: Pagination) -> Page[HookRunRead]:
    """Every hook run of the session (event, tool, outcome, duration), oldest first."""
    return await paged_rows(db, repo.hook_runs_of(s.id), params, HookRunRead)


@router.get("/{session_id}/permissions", response_model=Page[PermissionRead])
async def permissions(s: OwnedSession, db: DB, params: Pagination) -> Page[PermissionRead]:
    """Every permission decision of the session (`decided_by`: mode, rule, user, timeout, cancelled, path_guard,
    sandbox), pending requests included, oldest first."""
    return await paged_rows(db, repo.permissions_of(s.id), params, PermissionRead)


@router.post("/{session_id}/permissions/{request_id}", response_model=PermissionAnswered)
async def answer_permission(
    s: OwnedSession, request_id: uuid.UUID, body: PermissionAnswer, user: CurrentUser, db: DB, state: State
) -> PermissionAnswered:
    """Answer a pending permission request: 404 for an unknown one, 409 once it is decided. `remember: "session"`
    adds a rule to the session's `allowed_tools` (allow) or `disallowed_tools` (deny) so later matching calls are
    decided without asking (`remembered_rule`; null when none can be derived safely, e.g. a compound command)."""
    answered = await answers.answer_permission(db, state, user, s, request_id, body)
    read = PermissionAnswered.model_validate(answered.request)
    read.remembered_rule = answered.remembered_rule
    return read


@router.get("/{session_id}/metrics/snapshots", response_model=Page[MetricsSnapshotRead])
async def metrics_snapshots(s: OwnedSession, db: DB, params: Pagination) -> Page[MetricsSnapshotRead]:
    """One metrics snapshot per finished turn (tokens, cost, tool calls by tool), oldest first."""
    return await paged_rows(db, repo.snapshots_of(s.id), params, MetricsSnapshotRead)


@router.get("/{session_id}/metrics/current", response_model=CurrentMetrics)
async def metrics_current(s: OwnedSession, db: DB, state: State) -> CurrentMetrics:
    """The session's totals now, its tool calls by tool, pending permission requests and whether its agent is live."""
    return await monitoring_service.current_metrics(db, state, s)


@router.get("/{session_id}/workdir/download", response_class=StreamingResponse)
async def download_workdir(s: DownloadableSession, state: State) -> StreamingResponse:
    """The working directory as a streamed `application/gzip` tar; symlinks are stored as links, never followed;
    413 over the size cap, 404 once it is archived or deleted. A browser may use `?ticket=` (a download ticket)
    instead of the `Authorization` header."""
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
        headers={"Content-Disposition": f'attachment; filename="{s.id}-workdir.tar.gz"', **security_headers.NOSNIFF},
    )


FilePath = Annotated[
    str,
    Query(
        max_length=workdir_files.MAX_PATH_CHARS,
        description="Relative to the working directory; empty for its root. Absolute paths and `..` are refused",
    ),
]


@router.get("/{session_id}/files", response_model=FileListRead)
async def list_files(s: OwnedSession, state: State, path: FilePath = "") -> FileListRead:
    """One directory of the working directory: its entries (`name`, `path`, `type` file|dir|symlink, `size`,
    `modified_at`), directories first, then by name; at most 1000, with `truncated` when there are more. A symlink
    is listed as one, never followed. 404 for a path that is missing, outside the working directory or through a
    symlink; 400 `not_a_directory` for a file."""
    return FileListRead.model_validate(await files.list_files(state, s, path))


@router.get(
    "/{session_id}/files/content",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}, "application/octet-stream": {}}}},
)
async def file_content(s: DownloadableSession, state: State, path: FilePath = "") -> Response:
    """A file's bytes: `text/plain; charset=utf-8` when it is UTF-8 text without NULs, else
    `application/octet-stream` as an attachment. 413 `file_too_large` over `AGENT_API_MAX_FILE_VIEW_BYTES`, 400
    `is_a_directory` for a directory, 404 for a path that is missing, outside the working directory or through a
    symlink. A browser may use `?ticket=` (a download ticket) instead of the `Authorization` header."""
    content = await files.read_file(state, s, path)
    headers = {"Content-Security-Policy": security_headers.FILE_CONTENT_CSP, **security_headers.NOSNIFF}
    if workdir_files.is_text(content.data):
        return Response(content.data, media_type="text/plain; charset=utf-8", headers=headers)
    headers["Content-Disposition"] = security_headers.attachment(content.name)
    return Response(content.data, media_type="application/octet-stream", headers=headers)
