"""Session lifecycle: create, list, delete, pause, resume, fork, archive, query answers, start-up recovery."""

from __future__ import annotations

import asyncio
import logging
import tarfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import idempotency
from agent_api.agent_settings import permission_policy
from agent_api.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from agent_api.event_log import change_status, record_status_change
from agent_api.mcp_servers import service as mcp_service
from agent_api.models import Message, PermissionRequest, Session, SessionArchive, Turn, User
from agent_api.models.base import utcnow
from agent_api.monitoring.budgets import ensure_within_budget
from agent_api.rate_limits import check_user_rate
from agent_api.runtime import workdir
from agent_api.session_templates import service as template_service
from agent_api.sessions import repository as repo
from agent_api.sessions.schemas import (
    ForkRequest,
    PendingPermission,
    QueryAccepted,
    QueryCompleted,
    SessionCreate,
)
from agent_api.state import AppState
from agent_api.turns import service as turns_service

log = logging.getLogger("agent_api.sessions")

# Statuses from which each action may start.
PAUSABLE = ("created", "connecting", "processing", "waiting", "active", "failed")
RESUMABLE = ("paused", "completed", "archived")
ENDED = ("terminated",)


def workdir_of(state: AppState, session_id: uuid.UUID) -> Path:
    return workdir.session_workdir(state.settings.data_dir, session_id)


def archive_path(state: AppState, session_id: uuid.UUID) -> Path:
    return state.settings.data_dir / "archives" / f"{session_id}.tar.gz"


async def find_owned(db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> Session | None:
    """The user's session, or None: for callers that answer a missing one their own way (a WebSocket close)."""
    return await repo.get_owned(db, user_id, session_id)


async def get_session(db: AsyncSession, session_id: uuid.UUID) -> Session | None:
    return await repo.get_session(db, session_id)


async def pending_permissions(db: AsyncSession, session_id: uuid.UUID) -> list[PermissionRequest]:
    """Requests still waiting for a person, oldest first."""
    return await repo.pending_permissions(db, session_id)


@dataclass(frozen=True)
class CreatedSession:
    session: Session
    # A template's opening message, to be sent as the session's first query.
    initial_message: str | None = None


async def create_session(db: AsyncSession, state: AppState, user: User, body: SessionCreate) -> CreatedSession:
    seed_files: list[dict[str, str]] = []
    initial_message = None
    if body.template_id is not None:
        applied = await template_service.apply_to_session(db, user, body.template_id, body)
        body, seed_files = applied.settings, applied.template.seed_files
        initial_message = applied.template.initial_message
    mcp_server_ids = await mcp_service.check_attachable(db, user, body.mcp_server_ids)
    s = Session(
        id=uuid.uuid4(),
        user_id=user.id,
        name=body.name,
        description=body.description,
        status="created",
        template_id=body.template_id,
        system_prompt=body.system_prompt,
        allowed_tools=body.allowed_tools,
        disallowed_tools=body.disallowed_tools,
        blocked_commands=body.blocked_commands,
        permission_mode=body.permission_mode,
        permission_timeout_s=body.permission_timeout_s,
        on_permission_timeout=body.on_permission_timeout,
        sdk_options=body.sdk_options.model_dump(exclude_none=True),
        mcp_server_ids=[str(i) for i in mcp_server_ids],
        meta=body.metadata,
        model=body.sdk_options.model or (state.endpoint.model if state.endpoint else None),
    )
    turns_service.take_spare_agent(state, s)
    db.add(s)
    await db.flush()
    await record_status_change(db, s.id, None, "created", "session created")
    await asyncio.to_thread(workdir.create_workdir, workdir_of(state, s.id))
    if seed_files:
        await asyncio.to_thread(workdir.write_seed_files, workdir_of(state, s.id), seed_files)
    return CreatedSession(s, initial_message)


async def start(db: AsyncSession, state: AppState, user: User, created: CreatedSession) -> None:
    """A new session's first step once committed: its template's opening message, or its agent warming up."""
    if created.initial_message:
        await send_message(db, state, user, created.session, created.initial_message)
    else:
        turns_service.warm(db, state, created.session)


@dataclass(frozen=True)
class SentMessage:
    session: Session  # the session the message went to (a new fork when asked to fork)
    turn: Turn
    message: Message


async def send_message(
    db: AsyncSession,
    state: AppState,
    user: User,
    s: Session,
    text: str,
    *,
    into_fork: bool = False,
    count_rate: bool = True,
    at_once: bool = False,
) -> SentMessage:
    """The one way a message reaches an agent (REST and WebSocket queries, fork-and-query, task executions):
    refusals first, then the turn is recorded and runs once the caller's transaction commits."""
    target = s
    if at_once and into_fork:  # the fork will need an agent of its own
        turns_service.ensure_agent_slot(state, user.id, uuid.uuid4())
    if into_fork:
        # Refusals first: a fork copies the working directory, which a rolled-back request would leave behind.
        check_user_rate(state, user.id, "query")
        await ensure_within_budget(db, state, user.id)
        target = await fork(db, state, user, s, ForkRequest())
    turn, message = await turns_service.start_turn(
        db, state, user, target, text, count_rate=count_rate and not into_fork, at_once=at_once
    )
    return SentMessage(target, turn, message)


async def unfinished_query(db: AsyncSession, state: AppState, accepted: QueryAccepted) -> QueryAccepted:
    """The answer to a `wait: true` query whose turn goes on: `waiting` with what it waits for, or `processing`."""
    pending = [p for p in await repo.pending_permissions(db, accepted.id) if p.turn_id == accepted.turn_id]
    s = await repo.get_session(db, accepted.id)
    timeout = timedelta(seconds=permission_policy(s, state.settings.permission_timeout_s).timeout_s)
    return accepted.model_copy(
        update={
            "status": "waiting" if pending else "processing",
            "pending_permissions": [
                PendingPermission(
                    request_id=p.id,
                    tool_name=p.tool_name,
                    input_summary=p.input_summary,
                    expires_at=p.created_at + timeout,
                )
                for p in pending
            ],
        }
    )


async def completed_query(db: AsyncSession, accepted: QueryAccepted) -> QueryCompleted:
    """The answer to a `wait: true` query whose turn has finished."""
    turn = await turns_service.get_turn(db, accepted.turn_id)
    s = await repo.get_session(db, accepted.id)
    assert turn is not None and s is not None
    return QueryCompleted(
        **accepted.model_dump(exclude={"status", "pending_permissions"}),
        status=s.status,
        result=turn.result,
        is_error=turn.is_error or turn.status != "completed",
        cost_usd=float(turn.cost_usd or 0),
        cost_estimated=turn.cost_estimated,
        usage=turn.usage,
        num_turns=turn.num_turns,
        duration_ms=turn.duration_ms,
        turn_status=turn.status,
    )


async def query_state(
    db: AsyncSession, state: AppState, accepted: QueryAccepted
) -> tuple[int, QueryAccepted | QueryCompleted]:
    """What a query's turn is now: 200 with the finished turn, or 202 `waiting` (with its requests) or `processing`."""
    turn = await turns_service.get_turn(db, accepted.turn_id)
    if turn is None:
        return 202, accepted  # nothing more to tell
    if turn.status not in turns_service.UNFINISHED:
        return 200, await completed_query(db, accepted)
    return 202, await unfinished_query(db, state, accepted)


async def get_owned(db: AsyncSession, user: User, session_id: uuid.UUID) -> Session:
    s = await find_owned(db, user.id, session_id)
    if s is None:
        raise NotFound("Session not found", code="session_not_found")
    return s


async def delete_session(db: AsyncSession, s: Session) -> bool:
    """Mark the session deleted; returns whether its archive is kept. The caller commits, then `release`s."""
    archived = await repo.get_archive(db, s.id) is not None
    if s.status in ENDED:
        return archived
    await change_status(db, s, "terminated", "deleted by the owner")
    s.completed_at = utcnow()
    await turns_service.deny_pending(db, s.id, "timeout", "session deleted")
    await db.flush()
    return archived


async def release(state: AppState, session_id: uuid.UUID, *, keep_archive: bool) -> None:
    """After a delete is committed: end the agent, then remove its files (the archive only when not kept)."""
    await state.dispatcher.stop_agent(session_id)
    await asyncio.to_thread(workdir.remove_workdir, workdir_of(state, session_id))
    if not keep_archive:
        archive_path(state, session_id).unlink(missing_ok=True)


async def pause(db: AsyncSession, s: Session) -> Session:
    """Mark the session paused; the caller commits, then stops the agent (whose last writes need the lock)."""
    if s.status == "paused":
        return s
    if s.status not in PAUSABLE:
        raise Conflict(f"A session in status {s.status!r} cannot be paused", code="invalid_status")
    await change_status(db, s, "paused", "paused by the owner")
    await turns_service.deny_pending(db, s.id, "timeout", "session paused")
    await db.flush()
    return s


async def resume(db: AsyncSession, state: AppState, s: Session) -> Session:
    if s.status not in RESUMABLE:
        raise Conflict(f"A session in status {s.status!r} cannot be resumed", code="invalid_status")
    if s.status == "archived":
        archive = await repo.get_archive(db, s.id)
        if archive is not None:
            try:
                await asyncio.to_thread(
                    workdir.restore_archive,
                    Path(archive.path),
                    workdir_of(state, s.id),
                    state.settings.max_workdir_bytes,
                )
            except (workdir.UnsafeArchive, tarfile.TarError, OSError) as exc:
                log.warning("archive of session %s cannot be restored: %s", s.id, exc)
                raise Conflict(f"The session's archive cannot be restored: {exc}", code="archive_unrestorable") from exc
            archive.restored_at = utcnow()
    await change_status(db, s, "active", "resumed by the owner")
    s.completed_at = None
    await db.flush()
    return s


async def fork(db: AsyncSession, state: AppState, user: User, parent: Session, body: ForkRequest) -> Session:
    """A new session with the parent's settings, conversation (up to `fork_at_message`) and, by default, files.

    Copying files may take a while, and the request's transaction holds SQLite's only write lock: so this commits
    what the request has written so far (no more than an Idempotency-Key claim) and copies outside any transaction,
    and only then records the child. No half fork is ever visible: the child row exists once its files are whole,
    and a crash mid-copy leaves only a staging directory, removed on the next start. Refusals come before the
    commit; if the copy fails, the claim committed early is released, as a rollback would have.
    """
    if parent.status in ENDED:
        raise Conflict("A deleted session cannot be forked", code="invalid_status")
    cut: Message | None = None
    if body.fork_at_message is not None:
        cut = await repo.get_message_of(db, parent.id, body.fork_at_message)
        if cut is None:
            raise ValidationFailed("fork_at_message is not a message of this session", code="message_not_found")
    child_id = uuid.uuid4()
    target = workdir_of(state, child_id)
    if body.include_working_directory and workdir_of(state, parent.id).is_dir():
        claims = idempotency.claims_in(db)
        await db.commit()
        try:
            await asyncio.to_thread(
                workdir.copy_workdir, workdir_of(state, parent.id), target, state.settings.max_workdir_bytes
            )
        except BaseException as exc:
            await asyncio.shield(_release_claims(state, claims))
            if isinstance(exc, workdir.WorkdirTooLarge):
                raise PayloadTooLarge("The working directory is too large to copy", code="workdir_too_large") from exc
            raise
    else:
        await asyncio.to_thread(workdir.create_workdir, target)
    try:
        return await _record_fork(db, user, parent, body, child_id, cut)
    except BaseException:
        await asyncio.to_thread(workdir.remove_workdir, target)
        raise


async def _release_claims(state: AppState, claims: list[idempotency.ClaimedKey]) -> None:
    if claims:
        async with state.db.transaction() as fresh:
            await idempotency.release(fresh, claims)


async def _record_fork(
    db: AsyncSession, user: User, parent: Session, body: ForkRequest, child_id: uuid.UUID, cut: Message | None
) -> Session:
    await db.refresh(parent)  # the parent may have moved on (or been deleted) while its files were copied
    if parent.status in ENDED:
        raise Conflict("A deleted session cannot be forked", code="invalid_status")
    child = Session(
        id=child_id,
        user_id=user.id,
        name=body.name or f"{parent.name or 'session'} (fork)",
        description=parent.description,
        status="created",
        template_id=parent.template_id,
        system_prompt=parent.system_prompt,
        allowed_tools=list(parent.allowed_tools or []),
        disallowed_tools=list(parent.disallowed_tools or []),
        blocked_commands=list(parent.blocked_commands or []),
        permission_mode=parent.permission_mode,
        permission_timeout_s=parent.permission_timeout_s,
        on_permission_timeout=parent.on_permission_timeout,
        sdk_options=dict(parent.sdk_options or {}),
        mcp_server_ids=list(parent.mcp_server_ids or []),
        meta=dict(parent.meta or {}),
        parent_session_id=parent.id,
        is_fork=True,
        model=parent.model,
        fork_from_sdk_session_id=parent.sdk_session_id,
        fork_at_message_uuid=cut.sdk_uuid if cut is not None else None,
    )
    db.add(child)
    await db.flush()
    child.message_count = await _copy_history(db, parent.id, child.id, cut)
    await record_status_change(db, child.id, None, "created", f"forked from {parent.id}")
    return child


async def _copy_history(db: AsyncSession, parent_id: uuid.UUID, child_id: uuid.UUID, cut: Message | None) -> int:
    messages = (await db.scalars(repo.messages_of(parent_id))).all()
    count = 0
    for m in messages:
        db.add(
            Message(
                session_id=child_id,
                role=m.role,
                content=m.content,
                text=m.text,
                model=m.model,
                sdk_uuid=m.sdk_uuid,
                created_at=m.created_at,
            )
        )
        count += 1
        if cut is not None and m.id == cut.id:
            break
    await db.flush()
    return count


async def archive(db: AsyncSession, state: AppState, s: Session) -> SessionArchive:
    if s.status in ("processing", "waiting"):
        raise Conflict("The session is running a turn", code="session_busy")
    if s.status in ENDED:
        raise Conflict("A deleted session cannot be archived", code="invalid_status")
    if s.status == "archived" and (existing := await repo.get_archive(db, s.id)) is not None:
        # Its files are in that archive and gone from disk: archiving again would replace it with an empty one.
        return existing
    await state.dispatcher.stop_agent(s.id)
    source, dest = workdir_of(state, s.id), archive_path(state, s.id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        await asyncio.to_thread(workdir.create_workdir, source)
    try:
        info = await asyncio.to_thread(workdir.create_archive, source, dest, state.settings.max_workdir_bytes)
    except workdir.WorkdirTooLarge as exc:
        raise PayloadTooLarge("The working directory is too large to archive", code="workdir_too_large") from exc
    record = await repo.get_archive(db, s.id)
    if record is None:
        record = SessionArchive(session_id=s.id, path=str(info.path), size_bytes=0, file_count=0, sha256="")
        db.add(record)
    record.path, record.size_bytes, record.file_count, record.sha256 = (
        str(info.path),
        info.size_bytes,
        info.file_count,
        info.sha256,
    )
    record.created_at, record.restored_at = utcnow(), None
    await change_status(db, s, "archived", "archived by the owner")
    # Committed before the files go: a crash while they are removed must find the session archived (a resume
    # restores the archive over what is left), never active with half its files and the archive unrecorded.
    await db.commit()
    await asyncio.to_thread(workdir.remove_workdir, source)
    return record


async def recover_after_restart(state: AppState) -> int:
    """Turns a crash left running are marked interrupted and billed, and their sessions made resumable (`active`);
    keyed requests left in progress answer what they had answered; half-built fork copies and archives go."""
    swept = await asyncio.to_thread(workdir.sweep_staging, state.settings.data_dir)
    if swept:
        log.warning("removed %d fork copies or archives a crash left unfinished", swept)
    async with state.db.transaction() as db:
        recovered = await turns_service.recover_after_restart(db)
        stuck = (await db.scalars(repo.sessions_in(("connecting", "processing", "waiting")))).all()
        for s in stuck:
            await change_status(db, s, "active", "server restarted; the interrupted turn can be retried")
            await turns_service.deny_pending(db, s.id, "timeout", "server restarted")
        await idempotency.settle_in_progress(db)
    if recovered or stuck:
        log.warning("recovered %d interrupted turns in %d sessions", recovered, len(stuck))
    return recovered
