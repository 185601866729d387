"""Request and response bodies of the session routes (field names as DESIGN.md fixes them)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

PermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions"]
SessionStatus = Literal[
    "created",
    "connecting",
    "processing",
    "waiting",
    "active",
    "paused",
    "completed",
    "failed",
    "terminated",
    "archived",
]
MAX_MESSAGE_CHARS = 50_000
MAX_METADATA_BYTES = 16_384
ToolRule = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# A model name reaches the agent CLI's command line: never a leading dash, never whitespace or shell syntax.
ModelName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/\[\]-]*$"
    ),
]


class SdkOptions(BaseModel):
    """The SDK options a client may set; others (`add_dirs`, `extra_args`, `settings`, `env`, `sandbox`,
    `cli_path`...) are ignored and never reach the agent CLI."""

    model_config = ConfigDict(extra="ignore")

    model: ModelName | None = None
    max_turns: int | None = Field(default=None, ge=1, le=500)
    max_thinking_tokens: int | None = Field(default=None, ge=0, le=200_000)
    fallback_model: ModelName | None = None

    @field_validator("fallback_model", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class SessionSettings(BaseModel):
    """What a session (and later a template or a task) configures about its agent."""

    system_prompt: Annotated[str, StringConstraints(max_length=100_000)] | None = None
    allowed_tools: list[ToolRule] = Field(default_factory=list, max_length=100)
    disallowed_tools: list[ToolRule] = Field(default_factory=list, max_length=100)
    blocked_commands: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=100, description="Regular expressions; a Bash command matching one is blocked"
    )
    permission_mode: PermissionMode = "default"
    sdk_options: SdkOptions = Field(default_factory=SdkOptions)
    mcp_server_ids: list[uuid.UUID] = Field(default_factory=list, max_length=50)

    @field_validator("blocked_commands")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid pattern {pattern!r}: {exc}") from exc
        return patterns


class SessionCreate(SessionSettings):
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    description: Annotated[str, StringConstraints(max_length=5_000)] | None = None
    template_id: uuid.UUID | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_client_workdir(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("working_directory") is not None:
            raise ValueError("working_directory is chosen by the server and cannot be set")
        return data

    @field_validator("metadata")
    @classmethod
    def _metadata_bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata larger than {MAX_METADATA_BYTES} bytes")
        return value


class SessionSettingsRead(BaseModel):
    """The agent settings as a session, a template and a task report them."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    system_prompt: str | None
    allowed_tools: list[str]
    disallowed_tools: list[str]
    blocked_commands: list[str]
    permission_mode: str
    sdk_options: dict[str, Any]
    mcp_server_ids: list[str]


class SessionRead(SessionSettingsRead):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str | None
    description: str | None
    status: str
    template_id: uuid.UUID | None
    mcp_status: list[dict[str, Any]] | None = Field(
        default=None, description="Each attached MCP server's connection status, as the agent last reported it"
    )
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("meta", "metadata"))
    parent_session_id: uuid.UUID | None
    is_fork: bool
    model: str | None
    message_count: int
    tool_call_count: int
    turn_count: int
    total_cost_usd: float
    total_input_tokens: int
    total_output_tokens: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None


class QueryRequest(BaseModel):
    message: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    wait: bool = False
    fork: bool = False

    @field_validator("message")
    @classmethod
    def _storable(cls, value: str) -> str:
        # HTTP bodies are checked by the input-hygiene middleware; WebSocket frames arrive here directly.
        if "\x00" in value:
            raise ValueError("text may not contain NUL characters")
        return value


class TurnOutcome(BaseModel):
    result: str | None
    is_error: bool
    cost_usd: float
    cost_estimated: bool = Field(
        default=False, description="The turn ended without the agent's own figures; its cost is priced from usage"
    )
    usage: dict[str, Any] | None
    num_turns: int | None
    duration_ms: int | None
    turn_status: str


class QueryAccepted(BaseModel):
    id: uuid.UUID
    message_id: uuid.UUID
    turn_id: uuid.UUID
    status: str


class QueryCompleted(QueryAccepted, TurnOutcome):
    pass


class ForkRequest(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    fork_at_message: uuid.UUID | None = Field(default=None, description="Id of one of this session's messages")
    include_working_directory: bool = True


class ResumeRequest(BaseModel):
    fork: bool = False


class PermissionAnswer(BaseModel):
    decision: Literal["allow", "deny"]
    message: Annotated[str, StringConstraints(max_length=1000)] | None = None


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    session_id: uuid.UUID
    turn_id: uuid.UUID | None
    role: str
    content: list[dict[str, Any]]
    text: str | None
    model: str | None
    created_at: datetime


class ToolCallRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    session_id: uuid.UUID
    turn_id: uuid.UUID | None
    tool_use_id: str
    name: str
    input: dict[str, Any]
    output: Any | None
    is_error: bool
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None


class PermissionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    session_id: uuid.UUID
    turn_id: uuid.UUID | None
    tool_name: str
    tool_use_id: str | None
    input_summary: dict[str, Any]
    decision: str | None
    decided_by: str | None
    reason: str | None
    created_at: datetime
    decided_at: datetime | None


class HookRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    session_id: uuid.UUID
    turn_id: uuid.UUID | None
    event: str
    tool_name: str | None
    tool_use_id: str | None
    outcome: str
    reason: str | None
    duration_ms: float
    created_at: datetime


class MetricsSnapshotRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    session_id: uuid.UUID
    turn_id: uuid.UUID | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float
    total_cost_usd: float
    num_turns: int
    tool_calls_by_tool: dict[str, int]
    error_count: int
    duration_ms: int
    created_at: datetime


class CurrentMetrics(BaseModel):
    session_id: uuid.UUID
    status: str
    message_count: int
    tool_call_count: int
    turn_count: int
    total_cost_usd: float
    total_input_tokens: int
    total_output_tokens: int
    total_cache_read_tokens: int
    total_cache_creation_tokens: int
    tool_calls_by_tool: dict[str, int]
    error_count: int
    permission_requests_pending: int
    live: bool


class ArchiveRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    session_id: uuid.UUID
    size_bytes: int
    file_count: int
    sha256: str
    created_at: datetime
    restored_at: datetime | None
