"""Report schemas: the structured report (what `report.schema.json` publishes) and the API's read models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ReportFormat = Literal["html", "pdf", "json"]
ReportStatus = Literal["completed", "failed", "interrupted", "running", "empty"]
ReportSourceKind = Literal["session", "task_execution"]


class _Strict(BaseModel):
    # The published schema forbids unknown keys; building data with one is a bug to catch here, not in a client.
    model_config = ConfigDict(extra="forbid")


class ReportSource(_Strict):
    kind: ReportSourceKind
    session_id: uuid.UUID | None
    task_id: uuid.UUID | None
    task_execution_id: uuid.UUID | None


class SessionSnapshot(_Strict):
    id: uuid.UUID
    name: str | None
    status: str
    model: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class TimelineMessage(_Strict):
    type: Literal["message"] = "message"
    at: datetime
    role: str
    text: str
    truncated: bool


class TimelineToolCall(_Strict):
    type: Literal["tool_call"] = "tool_call"
    at: datetime
    finished_at: datetime | None
    name: str
    tool_use_id: str
    status: str
    is_error: bool
    duration_ms: int | None
    # Input as JSON text and output as text, each cut to a readable length.
    input: str
    output: str | None
    truncated: bool


TimelineEntry = Annotated[TimelineMessage | TimelineToolCall, Field(discriminator="type")]


class Timeline(_Strict):
    entries: list[TimelineEntry]
    total: int  # entries the session has; when more than fit, the first and last ones are kept
    omitted: int


class FileEntry(_Strict):
    path: str
    kind: Literal["file", "symlink"]
    size_bytes: int
    modified_at: datetime
    changed: bool  # modified since the session's first turn began


class WorkdirFiles(_Strict):
    available: bool  # false when the working directory is gone (archived or deleted)
    items: list[FileEntry]
    total_count: int
    total_bytes: int
    truncated: bool


class Usage(_Strict):
    total_cost_usd: float
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    turns: int
    messages: int
    tool_calls: int


class ReportData(_Strict):
    schema_version: Literal[1] = 1  # bumped on any incompatible change to the published schema
    report_id: uuid.UUID
    title: str
    generated_at: datetime
    status: ReportStatus
    source: ReportSource
    session: SessionSnapshot
    model: str | None
    prompt: str | None
    final_answer: str | None
    duration_ms: int | None
    usage: Usage
    errors: list[str]
    timeline: Timeline
    files: WorkdirFiles


class ReportCreate(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=300)


class ReportRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID | None
    task_id: uuid.UUID | None
    task_execution_id: uuid.UUID | None
    title: str
    status: ReportStatus
    model: str | None
    total_cost_usd: float
    total_input_tokens: int
    total_output_tokens: int
    duration_ms: int | None
    error_message: str | None
    created_at: datetime


class ReportDetailRead(ReportRead):
    data: ReportData


class ReportFilters(BaseModel):
    session_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    task_execution_id: uuid.UUID | None = None
    source: ReportSourceKind | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
