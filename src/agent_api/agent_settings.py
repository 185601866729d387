"""What configures an agent session: the settings a session, a template and a task share, and their read model."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from agent_api.schema_text import NOT_BLANK

PermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions"]
OnPermissionTimeout = Literal["deny", "allow"]
MAX_PERMISSION_TIMEOUT_S = 86_400
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
MAX_TOOL_RULES = 100
ToolRule = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NOT_BLANK)]
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
    allowed_tools: list[ToolRule] = Field(default_factory=list, max_length=MAX_TOOL_RULES)
    disallowed_tools: list[ToolRule] = Field(default_factory=list, max_length=MAX_TOOL_RULES)
    blocked_commands: list[
        Annotated[str, StringConstraints(min_length=1, max_length=500), Field(json_schema_extra={"format": "regex"})]
    ] = Field(
        default_factory=list, max_length=100, description="Regular expressions; a Bash command matching one is blocked"
    )
    permission_mode: PermissionMode = "default"
    permission_timeout_s: float | None = Field(
        default=None,
        ge=1,
        le=MAX_PERMISSION_TIMEOUT_S,
        description="How long a permission request waits for a person, in seconds (1 to 86400); "
        "null: the server's AGENT_API_PERMISSION_TIMEOUT_S (300 s unless configured)",
    )
    on_permission_timeout: OnPermissionTimeout | None = Field(
        default=None,
        description="What a request nobody answers in time becomes: `deny` or `allow`; null: `deny`",
    )
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


class SessionSettingsRead(BaseModel):
    """The agent settings as a session, a template and a task report them."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    system_prompt: str | None
    allowed_tools: list[str]
    disallowed_tools: list[str]
    blocked_commands: list[str]
    permission_mode: str
    permission_timeout_s: float | None = Field(
        default=None, description="Seconds a permission request waits for a person; null: the server's default"
    )
    on_permission_timeout: str | None = Field(
        default=None, description="`deny` or `allow` when nobody answers in time; null: `deny`"
    )
    sdk_options: dict[str, Any]
    mcp_server_ids: list[str]


@dataclass(frozen=True)
class PermissionPolicy:
    """How long a session's permission requests wait for a person, and what the silence becomes."""

    timeout_s: float
    on_timeout: OnPermissionTimeout


def permission_policy(settings: Any, default_timeout_s: float) -> PermissionPolicy:
    """The policy of a session (or a template or task row): its own values, else the server's default and deny."""
    timeout = getattr(settings, "permission_timeout_s", None)
    on_timeout: OnPermissionTimeout = "allow" if getattr(settings, "on_permission_timeout", None) == "allow" else "deny"
    return PermissionPolicy(float(timeout) if timeout is not None else float(default_timeout_s), on_timeout)


def seconds_text(seconds: float) -> str:
    """30.0 -> "30 s", 1.5 -> "1.5 s"."""
    return f"{seconds:g} s"
