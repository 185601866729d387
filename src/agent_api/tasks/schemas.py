"""Request and response bodies of the task routes (field names as DESIGN.md fixes them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from agent_api.agent_settings import MAX_MESSAGE_CHARS, SessionSettings, SessionSettingsRead

ReportFormat = Literal["html", "pdf", "json"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
VariableValue = Annotated[str, StringConstraints(max_length=10_000)] | int | float | bool
Variables = Annotated[dict[VariableName, VariableValue], Field(max_length=50)]
PromptTemplate = Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]


def check_cron(expression: str | None) -> str | None:
    if expression is None:
        return None
    expression = " ".join(expression.split())
    fields = expression.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron expression {expression!r}: expected 5 fields (minute hour day month weekday), got {len(fields)}"
        )
    try:
        croniter(expression).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {expression!r} never fires (no such date)") from None
    except (ValueError, KeyError) as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from exc
    return expression


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name such as "America" is a directory
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


class _Schedule(BaseModel):
    schedule_cron: Annotated[str, StringConstraints(max_length=120)] | None = None
    schedule_timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    schedule_enabled: bool | None = None
    is_scheduled: bool | None = Field(
        default=None, description="Accepted for earlier clients: same as schedule_enabled"
    )

    @field_validator("schedule_cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return check_cron(value)

    @field_validator("schedule_timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @model_validator(mode="after")
    def _enabled_alias(self) -> _Schedule:
        if self.schedule_enabled is None and self.is_scheduled is not None:
            self.schedule_enabled = self.is_scheduled
        return self


class TaskCreate(SessionSettings, _Schedule):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=5_000)] | None = None
    prompt_template: PromptTemplate
    variables: Variables = Field(default_factory=dict, description="Defaults for the prompt's {{variables}}")
    template_id: uuid.UUID | None = None
    timeout_seconds: int = Field(default=600, ge=5, le=86_400)
    generate_report: bool = True
    report_format: ReportFormat = "html"
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskUpdate(SessionSettings, _Schedule):
    """PATCH: only the fields sent change (the session settings' defaults above apply only when sent)."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    description: Annotated[str, StringConstraints(max_length=5_000)] | None = None
    prompt_template: PromptTemplate | None = None
    variables: Variables | None = None
    template_id: uuid.UUID | None = None
    timeout_seconds: int | None = Field(default=None, ge=5, le=86_400)
    generate_report: bool | None = None
    report_format: ReportFormat | None = None
    tags: list[Tag] | None = Field(default=None, max_length=20)
    metadata: dict[str, Any] | None = None


class TaskRead(SessionSettingsRead):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    description: str | None
    prompt_template: str
    variables: dict[str, Any]
    template_id: uuid.UUID | None
    schedule_cron: str | None
    schedule_timezone: str
    schedule_enabled: bool
    is_scheduled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    timeout_seconds: int
    generate_report: bool
    report_format: str
    tags: list[str]
    metadata: dict[str, Any] = Field(validation_alias="meta")
    execution_count: int
    created_at: datetime
    updated_at: datetime


class ExecuteRequest(BaseModel):
    variables: Variables = Field(default_factory=dict)


class ExecutionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    task_id: uuid.UUID
    user_id: uuid.UUID
    status: str
    trigger_type: str
    scheduled_for: datetime | None
    variables: dict[str, Any]
    prompt: str
    session_id: uuid.UUID | None
    report_id: uuid.UUID | None
    result_data: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    duration_ms: int | None
    total_cost_usd: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
