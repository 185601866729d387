"""`/reports`: list, read and download reports; `POST /sessions/{id}/report` makes one for any session."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status
from fastapi.responses import Response

from agent_api import security_headers
from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB, State, end_transaction
from agent_api.pagination import Page, Pagination
from agent_api.reports import service
from agent_api.reports.deps import DownloadableReport, OwnedReport
from agent_api.reports.schemas import ReportCreate, ReportDetailRead, ReportFilters, ReportRead
from agent_api.sessions.deps import OwnedSession

router = APIRouter(tags=["reports"])


@cache
def _published_schema() -> dict[str, Any]:
    """The published JSON Schema of a report, read once from the package."""
    text = resources.files("agent_api.reports").joinpath("report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@router.get("/reports", response_model=Page[ReportRead])
async def list_reports(
    user: CurrentUser,
    db: DB,
    params: Pagination,
    filters: Annotated[ReportFilters, Query()],
) -> Page[ReportRead]:
    """The caller's reports, newest first; filters `session_id`, `task_id`, `task_execution_id`, `source`,
    `created_after`, `created_before`."""
    return await service.list_reports(db, user, filters, params)


# Declared before /reports/{report_id}, which would otherwise take "schema" for an id.
@router.get("/reports/schema", response_class=Response)
async def report_schema(user: CurrentUser) -> Response:
    """The JSON Schema of a report's structured data (`data`, and the JSON download)."""
    return Response(json.dumps(_published_schema(), indent=2), media_type="application/schema+json")


@router.get("/reports/{report_id}", response_model=ReportDetailRead)
async def get_report(report: OwnedReport) -> ReportDetailRead:
    """One of the caller's reports: summary (status, model, cost, tokens, duration) and `data`, the full
    structured report. 404 for another user's report."""
    return ReportDetailRead.model_validate(report)


@router.get("/reports/{report_id}/download", response_class=Response)
async def download_report(
    report: DownloadableReport,
    db: DB,
    state: State,
    fmt: Annotated[
        str,
        # A str, so another format is the 400 `invalid_format` DESIGN.md fixes (an enum would make it a 422).
        Query(alias="format", json_schema_extra={"enum": list(service.FORMATS)}),
    ] = "html",
) -> Response:
    """The report as the attachment `report-<id>.<format>`: `?format=html` (default), `pdf` or `json`.
    400 `invalid_format` for another format; 404 for another user's report. A PDF is rendered on the first download
    (within `AGENT_API_REPORT_RENDER_TIMEOUT_S` and `AGENT_API_REPORT_RENDER_MEMORY_MB`, else 413 `report_too_large`)
    and kept, so later downloads read it. The HTML carries a Content-Security-Policy
    that sandboxes it (no script), for the console's report frame. A browser may use `?ticket=` (a download ticket)
    instead of the `Authorization` header."""
    download = service.prepare_download(report, fmt)
    # A PDF can take seconds to render: hold no database connection meanwhile.
    await end_transaction(db)
    body = await service.render_download(state, download)
    headers = {"Content-Disposition": f'attachment; filename="{download.filename}"', **security_headers.NOSNIFF}
    if download.fmt == "html":
        headers.update(security_headers.report_frame_headers())
    return Response(body, media_type=download.media_type, headers=headers)


@router.get("/reports/{report_id}/view", response_class=Response)
async def view_report(report: DownloadableReport, db: DB, state: State) -> Response:
    """The HTML report shown in place (not as an attachment), for the console's sandboxed report frame: its own
    Content-Security-Policy sandboxes it and allows no script. A browser frame uses `?ticket=` (a download ticket)."""
    download = service.prepare_download(report, "html")
    await end_transaction(db)
    body = await service.render_download(state, download)
    return Response(body, media_type=download.media_type, headers=security_headers.report_frame_headers())


@router.post("/sessions/{session_id}/report", response_model=ReportDetailRead, status_code=status.HTTP_201_CREATED)
async def create_session_report(
    s: OwnedSession, user: CurrentUser, db: DB, state: State, body: Annotated[ReportCreate | None, Body()] = None
) -> ReportDetailRead:
    """Make a report of one of the caller's sessions now (201), titled `title` or after the
    session. 404 for another user's session."""
    report = await service.create_report(db, state, s.id, user_id=user.id, title=body.title if body else None)
    return ReportDetailRead.model_validate(report)
