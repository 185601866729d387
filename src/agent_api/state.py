"""What one running application holds: built once at start-up, reached by dependencies through `get_state`."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_api.auth.rate_limit import LoginLimiter
from agent_api.auth.security import JwtCodec
from agent_api.background import TaskRegistry
from agent_api.config import Settings
from agent_api.db import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    jwt: JwtCodec
    login_limiter: LoginLimiter
    background: TaskRegistry = field(default_factory=TaskRegistry)

    @classmethod
    def from_settings(cls, settings: Settings) -> AppState:
        settings.ensure_data_dir()
        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url, busy_timeout_ms=settings.db_busy_timeout_ms),
            jwt=JwtCodec(settings.resolved_secret_key(), settings.jwt_issuer, settings.jwt_audience),
            login_limiter=LoginLimiter(
                settings.login_max_failures_per_user, settings.login_max_failures_per_ip, settings.login_window_s
            ),
        )
