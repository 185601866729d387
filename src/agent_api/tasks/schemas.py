"""Request and response bodies of the task routes (field names as DESIGN.md fixes them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from agent_api.agent_settings import MAX_MESSAGE_CHARS, SessionSettings, SessionSettingsRead
from agent_api.schema_text import NOT_BLANK

ReportFormat = Literal["html", "pdf", "json"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50, pattern=NOT_BLANK)]
VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
VariableValue = Annotated[str, StringConstraints(max_length=10_000)] | int | float | bool
# Keys must match VariableName: `additionalProperties: false` says so (pydantic writes the key pattern as
# `patternProperties`, which alone lets any other key through).
Variables = Annotated[
    dict[VariableName, VariableValue], Field(max_length=50, json_schema_extra={"additionalProperties": False})
]
TaskName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NOT_BLANK)]
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


# Five fields of cron characters; which values each field takes (minute 0-59, ...) croniter judges.
CRON_PATTERN = r"^\s*[-0-9A-Za-z*,/?#]+(?:\s+[-0-9A-Za-z*,/?#]+){4}\s*$"
# The IANA names this host's time zone database knows (ZoneInfo accepts those).
TIME_ZONES = sorted(available_timezones())


class _Schedule(BaseModel):
    schedule_cron: (
        Annotated[str, StringConstraints(max_length=120), Field(json_schema_extra={"pattern": CRON_PATTERN})] | None
    ) = Field(default=None, description="Five fields: minute hour day-of-month month day-of-week")
    schedule_timezone: (
        Annotated[str, StringConstraints(max_length=64), Field(json_schema_extra={"enum": TIME_ZONES})] | None
    ) = Field(default=None, description="An IANA time zone name")
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
    name: TaskName
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

    # `SkipJsonSchema[None]`: may be left out, but null is refused (422 `null_field`, service._NOT_NULL), so the
    # document does not offer it.
    name: TaskName | SkipJsonSchema[None] = None
    description: Annotated[str, StringConstraints(max_length=5_000)] | None = None
    prompt_template: PromptTemplate | SkipJsonSchema[None] = None
    variables: Variables | SkipJsonSchema[None] = None
    template_id: uuid.UUID | None = None
    # The constraints sit inside the union's branch: on the union they would reach the document as "ge"/"maxLength".
    timeout_seconds: Annotated[int, Field(ge=5, le=86_400)] | SkipJsonSchema[None] = None
    generate_report: bool | SkipJsonSchema[None] = None
    report_format: ReportFormat | SkipJsonSchema[None] = None
    tags: Annotated[list[Tag], Field(max_length=20)] | SkipJsonSchema[None] = None
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
