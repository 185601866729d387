"""Request and response bodies of the session routes (field names as DESIGN.md fixes them)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from agent_api.agent_settings import (
    MAX_MESSAGE_CHARS,
    MAX_METADATA_BYTES,
    PermissionMode,
    SdkOptions,
    SessionSettings,
    SessionSettingsRead,
    SessionStatus,
)

__all__ = ["PermissionMode", "SdkOptions", "SessionSettings", "SessionSettingsRead", "SessionStatus"]


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


class PendingPermission(BaseModel):
    request_id: uuid.UUID
    tool_name: str
    input_summary: dict[str, Any]
    expires_at: datetime


class QueryAccepted(BaseModel):
    id: uuid.UUID
    message_id: uuid.UUID
    turn_id: uuid.UUID
    status: str
    pending_permissions: list[PendingPermission] = Field(
        default_factory=list,
        description="With `wait: true` and status `waiting`: what the turn waits for; answer each through "
        "`POST /sessions/{id}/permissions/{request_id}`",
    )


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
    remember: Literal["session"] | None = Field(
        default=None,
        description="`session`: also decide later matching calls of this session the same way, by a rule added to "
        "its `allowed_tools` (allow) or `disallowed_tools` (deny): for Bash the command's leading words "
        "(`Bash(git status:*)`), for other tools the tool's name. A Bash command with shell syntax (`;`, `&&`, `|`, "
        "`$(...)`, redirections, newlines) gets no rule: the answer applies to this call only",
    )


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


class PermissionAnswered(PermissionRead):
    remembered_rule: str | None = Field(
        default=None,
        description="The rule `remember: session` added to the session; null when none was asked for or none can "
        "be derived safely (then the answer applied to this call only)",
    )


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


class ArchiveRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    session_id: uuid.UUID
    size_bytes: int
    file_count: int
    sha256: str
    created_at: datetime
    restored_at: datetime | None


class FileEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    path: str = Field(description="Relative to the working directory; pass it as `?path=` to list or read it")
    type: Literal["file", "dir", "symlink"] = Field(description="A symlink is listed as such, never followed")
    size: int = Field(description="Bytes, from the entry's own lstat (a link's is the length of its target text)")
    modified_at: datetime


class FileListRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    path: str = Field(description="The directory listed, relative to the working directory (empty: its root)")
    entries: list[FileEntryRead] = Field(description="Directories first, then by name")
    truncated: bool = Field(description="True when the directory holds more entries than were listed")
