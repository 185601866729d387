"""Request and response bodies of the MCP server routes (field names as DESIGN.md fixes them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from agent_api.pagination import Page

ServerType = Literal["stdio", "http", "sse"]
HealthStatus = Literal["unknown", "healthy", "unhealthy"]
# The CLI names tools `mcp__<server>__<tool>`, so a name is kept to what survives that unchanged.
ServerName = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_-]{1,64}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")]
SecretValue = Annotated[str, StringConstraints(max_length=8_192)]
Arg = Annotated[str, StringConstraints(max_length=4_096)]
MAX_ENTRIES = 64


class StdioConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # DESIGN: unknown fields are ignored, never stored

    command: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1_024)]
    args: list[Arg] = Field(default_factory=list, max_length=MAX_ENTRIES)
    env: dict[EnvName, SecretValue] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    cwd: Annotated[str, StringConstraints(min_length=1, max_length=1_024)] | None = None

    @field_validator("command")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("the command contains a NUL byte")
        return value


class RemoteConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # DESIGN: unknown fields are ignored, never stored

    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_048)]
    headers: dict[HeaderName, SecretValue] = Field(default_factory=dict, max_length=MAX_ENTRIES)


def safe_errors(exc: ValidationError) -> str:
    """Where and what, without the submitted values (they may be secrets)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def parse_config(server_type: str, config: Any) -> StdioConfig | RemoteConfig:
    """Validate `config` for its transport; raises pydantic's ValidationError."""
    if server_type == "stdio":
        return StdioConfig.model_validate(config)
    return RemoteConfig.model_validate(config)


class McpServerCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # DESIGN: unknown fields are ignored, never stored

    name: ServerName
    description: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    server_type: ServerType
    config: dict[str, Any]
    is_enabled: bool = True
    is_global: bool = False

    @model_validator(mode="after")
    def _config_fits_type(self) -> McpServerCreate:
        try:
            self.config = parse_config(self.server_type, self.config).model_dump(exclude_none=True)
        except ValidationError as exc:
            raise ValueError(f"invalid config for a {self.server_type} server: {safe_errors(exc)}") from None
        return self


class McpServerUpdate(BaseModel):
    """Every field optional; `config` replaces the whole config, and a secret sent as "***" keeps its value."""

    model_config = ConfigDict(extra="ignore")  # DESIGN: unknown fields are ignored, never stored

    name: ServerName | None = None
    description: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    server_type: ServerType | None = None
    config: dict[str, Any] | None = None
    is_enabled: bool | None = None
    is_global: bool | None = None


class ToolInfo(BaseModel):
    name: str
    description: str | None = None


class McpServerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    description: str | None
    server_type: str
    config: dict[str, Any]
    is_enabled: bool
    is_global: bool
    health_status: str
    last_health_check_at: datetime | None
    last_health: dict[str, Any] | None
    tools: list[ToolInfo]
    created_at: datetime
    updated_at: datetime


McpServerPage = Page[McpServerRead]


class HealthCheckRead(BaseModel):
    server_id: uuid.UUID
    status: Literal["healthy", "unhealthy"]
    checked_at: datetime
    latency_ms: float
    server_name: str | None = None
    server_version: str | None = None
    protocol_version: str | None = None
    tools: list[ToolInfo] = Field(default_factory=list)
    resources: list[dict[str, Any]] | None = None
    prompts: list[dict[str, Any]] | None = None
    error: str | None = None


class TemplateEnv(BaseModel):
    name: str
    description: str
    required: bool = True


class TemplateRead(BaseModel):
    id: str
    name: str
    description: str
    server_type: ServerType
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    url: str | None = None
    placeholders: dict[str, str] = Field(default_factory=dict, description="placeholder -> what to fill in")
    env: list[TemplateEnv] = Field(default_factory=list)
    docs: str


class FromTemplate(BaseModel):
    """`POST /mcp-servers` with `template` instead of `server_type`/`config`."""

    model_config = ConfigDict(extra="ignore")  # DESIGN: unknown fields are ignored, never stored

    template: Annotated[str, StringConstraints(max_length=64)]
    name: ServerName | None = None
    description: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    values: dict[str, Annotated[str, StringConstraints(min_length=1, max_length=4_096)]] = Field(
        default_factory=dict, max_length=MAX_ENTRIES
    )
    env: dict[EnvName, SecretValue] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    is_enabled: bool = True
    is_global: bool = False


class ImportFailure(BaseModel):
    server: str
    error: str


class ImportResult(BaseModel):
    imported: list[str]
    skipped: list[str]
    errors: list[ImportFailure]
    summary: str
