"""Service configuration: one Settings object, read from `AGENT_API_*` environment variables."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SECRET_KEY_FILE = "secret_key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENT_API_", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = None
    auto_migrate: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str | None = None
    log_level: str = "INFO"
    # auto: coloured text on an interactive terminal, JSON lines otherwise (a service manager, a container, a pipe).
    log_format: Literal["auto", "json", "text"] = "auto"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 14 * 24 * 3600
    jwt_issuer: str = "agent-api"
    jwt_audience: str = "agent-api"

    login_max_failures_per_user: int = 5
    login_max_failures_per_ip: int = 50
    login_window_s: int = 300

    max_body_bytes: int = 1_048_576
    db_busy_timeout_ms: int = 30_000

    idle_timeout_s: float = 300.0
    max_live_sessions: int = 20
    # Live agents one user may hold, so one user cannot take every slot; 0 means only max_live_sessions applies.
    max_live_sessions_per_user: int = Field(default=5, ge=0)
    # Open event streams (WebSocket and SSE together) per user; 0 means unlimited.
    max_streams_per_user: int = Field(default=20, ge=0)
    # Agent processes started ahead for sessions with default options (within max_live_sessions): a first message
    # then finds its agent running. Each idle one holds an agent CLI's memory.
    spare_agents: int = Field(default=1, ge=0, le=16)
    permission_timeout_s: float = 300.0
    query_wait_timeout_s: float = 900.0
    cli_max_retries: int = 2
    sandbox: Literal["auto", "required", "off"] = "auto"
    max_workdir_bytes: int = 1_073_741_824
    # The largest file `GET /sessions/{id}/files/content` returns (the console's file viewer); larger ones are 413.
    max_file_view_bytes: int = Field(default=1_048_576, ge=0)

    ws_heartbeat_s: float = 20.0
    ws_send_timeout_s: float = 10.0

    # Costs, budgets, rate limits and metrics (issue 7). A user's own monthly budget wins over the default;
    # None at both levels means unlimited.
    default_monthly_budget_usd: float | None = Field(default=None, ge=0)
    budget_warning_percent: float = Field(default=80.0, gt=0, le=100)
    budget_turn_reserve_usd: float = Field(default=0.05, ge=0)
    rate_limit_query_per_minute: int = Field(default=60, ge=0)
    rate_limit_execute_per_minute: int = Field(default=20, ge=0)
    metrics_enabled: bool = True
    metrics_token: str | None = None
    # Without a token, /metrics answers loopback clients only, unless this opens it to every address.
    metrics_public: bool = False

    # Task schedules: every process ticks; the (task, slot) key keeps each slot to one execution.
    scheduler_enabled: bool = True
    scheduler_interval_s: float = Field(default=15.0, gt=0)

    # A report's PDF renders in a child process killed past these limits (413 `report_too_large`).
    report_render_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    report_render_memory_mb: int = Field(default=1024, ge=32)

    admin_username: str | None = None
    admin_password: str | None = None
    admin_email: str | None = None

    # MCP servers: a stdio server runs a command on this host, so who may register one is a policy; remote URLs pass
    # an SSRF check unless their host is on the admin's allowlist.
    mcp_stdio: Literal["admin", "allowlist", "off"] = "admin"
    mcp_stdio_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mcp_health_timeout_s: float = 15.0

    # Webhooks: targets pass the same SSRF check as MCP URLs unless their host is allowlisted here.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # An endpoint whose deliveries have failed for this long is disabled (its owner sees why).
    webhook_disable_after_s: float = Field(default=86_400.0, gt=0)
    webhook_max_per_user: int = Field(default=20, ge=1)

    @field_validator("mcp_stdio_allowlist", "mcp_allowed_hosts", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_mcp_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'agent-api.db').resolve()}"

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    def resolved_secret_key(self) -> str:
        """The configured secret, or one generated on first start and kept in the data dir (mode 0600)."""
        if self.secret_key:
            return self.secret_key
        path = self.ensure_data_dir() / SECRET_KEY_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        key = secrets.token_urlsafe(48)
        try:
            # O_EXCL: when two processes start at once, exactly one writes and both read the same key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
