"""Reports: made from a session's rows and files, stored as a snapshot, rendered on download (a PDF once, then
kept in the data dir)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.errors import BadRequest, NotFound, PayloadTooLarge
from agent_api.models import Report, Session, User
from agent_api.models.base import utcnow
from agent_api.pagination import Page, PageParams, paged
from agent_api.reports import collect, render
from agent_api.reports import repository as repo
from agent_api.reports.schemas import (
    ReportData,
    ReportFilters,
    ReportRead,
    ReportSource,
    SessionSnapshot,
    Usage,
)
from agent_api.sessions import service as sessions_service
from agent_api.state import AppState

FORMATS = ("html", "pdf", "json")
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "pdf": "application/pdf", "json": "application/json"}
TITLE_CHARS = 300


async def create_report(
    db: AsyncSession,
    state: AppState,
    session_id: uuid.UUID,
    *,
    user_id: uuid.UUID,
    title: str | None = None,
    task_id: uuid.UUID | None = None,
    task_execution_id: uuid.UUID | None = None,
    error: str | None = None,
) -> Report:
    """Snapshot the session (one of `user_id`'s) into a new report row; flushed, not committed.

    `error` is what ended a task execution (a timeout, say); it leads the report's errors and makes it `failed`.
    """
    s = await sessions_service.find_owned(db, user_id, session_id)
    if s is None:
        raise NotFound("Session not found", code="session_not_found")
    turns = await repo.turns_of(db, s.id)
    messages, calls, entry_count = await repo.timeline_rows(db, s.id, collect.TIMELINE_HALF)
    prompt = turns[0].prompt if turns else await repo.first_user_text(db, s.id)
    work_began = next((t.started_at or t.created_at for t in turns), None)
    files = await asyncio.to_thread(collect.list_files, sessions_service.workdir_of(state, s.id), work_began)

    report_title = collect.clip(title or s.name or f"Session {s.id}", TITLE_CHARS)[0]
    errors = collect.errors(turns, s.error_message, error)
    data = ReportData(
        report_id=uuid.uuid4(),
        title=report_title,
        generated_at=utcnow(),
        status=collect.outcome(turns, error),
        source=ReportSource(
            kind="task_execution" if task_execution_id else "session",
            session_id=s.id,
            task_id=task_id,
            task_execution_id=task_execution_id,
        ),
        session=SessionSnapshot(
            id=s.id,
            name=s.name,
            status=s.status,
            model=s.model,
            created_at=s.created_at,
            started_at=s.started_at,
            completed_at=s.completed_at,
        ),
        model=s.model,
        prompt=collect.clip(prompt, collect.LONG_TEXT_CHARS)[0] if prompt else None,
        final_answer=collect.final_answer(turns),
        duration_ms=collect.total_duration_ms(turns),
        usage=_usage(s, len(turns)),
        errors=errors,
        timeline=collect.timeline(messages, calls, entry_count),
        files=files,
    )
    report = _report_row(data, user_id, task_id, task_execution_id)
    db.add(report)
    await db.flush()
    return report


def _usage(s: Session, turn_count: int) -> Usage:
    return Usage(
        total_cost_usd=float(s.total_cost_usd or 0),
        input_tokens=s.total_input_tokens,
        output_tokens=s.total_output_tokens,
        cache_read_tokens=s.total_cache_read_tokens,
        cache_creation_tokens=s.total_cache_creation_tokens,
        turns=turn_count,
        messages=s.message_count,
        tool_calls=s.tool_call_count,
    )


def _report_row(
    data: ReportData, user_id: uuid.UUID, task_id: uuid.UUID | None, task_execution_id: uuid.UUID | None
) -> Report:
    """The report's row: the document itself, plus the columns lists filter and sort on."""
    return Report(
        id=data.report_id,
        user_id=user_id,
        session_id=data.session.id,
        task_id=task_id,
        task_execution_id=task_execution_id,
        title=data.title,
        status=data.status,
        model=data.model,
        total_cost_usd=data.usage.total_cost_usd,
        total_input_tokens=data.usage.input_tokens,
        total_output_tokens=data.usage.output_tokens,
        duration_ms=data.duration_ms,
        error_message=data.errors[0] if data.errors else None,
        data=data.model_dump(mode="json"),
        created_at=data.generated_at,
    )


async def get_owned(db: AsyncSession, user: User, report_id: uuid.UUID) -> Report:
    report = await repo.get_owned(db, user.id, report_id)
    if report is None:
        raise NotFound("Report not found", code="report_not_found")
    return report


async def list_reports(db: AsyncSession, user: User, filters: ReportFilters, params: PageParams) -> Page[ReportRead]:
    return await paged(db, repo.list_owned(user.id, filters), params, ReportRead)


@dataclass(frozen=True)
class Download:
    report_id: uuid.UUID
    data: ReportData
    fmt: str
    media_type: str
    filename: str


def prepare_download(report: Report, fmt: str) -> Download:
    """Everything a download needs from the row, so the caller can end its transaction before rendering."""
    if fmt not in FORMATS:
        raise BadRequest(f"Unknown format {fmt[:20]!r}: use one of {', '.join(FORMATS)}", code="invalid_format")
    data = ReportData.model_validate(report.data)
    return Download(report.id, data, fmt, MEDIA_TYPES[fmt], f"report-{report.id}.{fmt}")


async def render_download(state: AppState, download: Download) -> bytes:
    if download.fmt == "json":
        return render.to_json(download.data)
    if download.fmt == "pdf":
        return await _stored_pdf(state, download)
    return render.to_html(download.data).encode()


def pdf_path(state: AppState, report_id: uuid.UUID) -> Path:
    return state.settings.data_dir / "reports" / f"{report_id}.pdf"


# One render per report at a time in this process: concurrent downloads of a new report wait for the first.
_rendering: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()


async def _stored_pdf(state: AppState, download: Download) -> bytes:
    """A report never changes once made, so its PDF is rendered on the first download and read from the data dir
    after that (rendering takes seconds of CPU)."""
    path = pdf_path(state, download.report_id)
    lock = _rendering.setdefault(download.report_id, asyncio.Lock())
    async with lock:
        with contextlib.suppress(FileNotFoundError):
            return await asyncio.to_thread(path.read_bytes)
        settings = state.settings
        limits = f"{settings.report_render_timeout_s:g}s {settings.report_render_memory_mb}MiB"
        failed = path.with_name(f"{path.name}.failed")
        # A report that did not fit the limits fails again at once while they stay the same: each retry would
        # otherwise spend the whole timeout of CPU in one of the few render slots other users' downloads share.
        with contextlib.suppress(FileNotFoundError):
            if await asyncio.to_thread(failed.read_text) == limits:
                raise _too_large(f"it did not render within {limits} before")
        try:
            pdf = await render.to_pdf_bounded(
                render.to_html(download.data),
                timeout_s=settings.report_render_timeout_s,
                memory_bytes=settings.report_render_memory_mb * 1024 * 1024,
            )
        except render.RenderFailed as exc:
            await asyncio.to_thread(_write_atomically, failed, limits.encode())
            raise _too_large(str(exc)) from exc
        await asyncio.to_thread(_write_atomically, path, pdf)
        return pdf


def _too_large(reason: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"This report could not be rendered as PDF within the server's limits ({reason}); download it as html or json",
        code="report_too_large",
    )


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_bytes(content)
    os.replace(tmp, path)
