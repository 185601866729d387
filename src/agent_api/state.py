"""What one running application holds: built once at start-up, reached by dependencies through `get_state`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from agent_api.auth_cache import AuthCache, AuthListener, watch
from agent_api.background import TaskRegistry
from agent_api.config import Settings
from agent_api.db import Database
from agent_api.dispatcher import Dispatcher
from agent_api.metrics import AppMetrics
from agent_api.models.base import utcnow
from agent_api.rate_limits import LoginLimiter, StreamSlots, UserRateLimiter
from agent_api.security import JwtCodec

if TYPE_CHECKING:
    from agent_api.bus import EventBus
    from agent_api.runtime.endpoint import ModelEndpoint
    from agent_api.runtime.mcp_relay import McpRelay
    from agent_api.runtime.pool import AgentPool


@dataclass
class AppState:
    settings: Settings
    db: Database
    jwt: JwtCodec
    login_limiter: LoginLimiter
    background: TaskRegistry = field(default_factory=TaskRegistry)
    # Set at start-up by the lifespan: the model endpoint, the MCP relay and the pool of live agents.
    endpoint: ModelEndpoint | None = None
    mcp_relay: McpRelay | None = None
    agents: AgentPool | None = None
    bash_sandboxed: bool = False
    # Owns all work in flight; set by the application once the domains' jobs exist.
    dispatcher: Dispatcher = field(init=False)
    bus: EventBus | None = None
    # Budget periods read the time here, so tests can move it to the next month.
    clock: Callable[[], datetime] = utcnow
    user_rates: UserRateLimiter = field(default_factory=UserRateLimiter)
    streams: StreamSlots = field(default_factory=StreamSlots)
    metrics: AppMetrics = field(default_factory=AppMetrics)
    # Logins as authentication last read them, dropped by any committed change to their rows (see auth_cache.py).
    auth_cache: AuthCache = field(default_factory=AuthCache)
    auth_listener: AuthListener | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AppState:
        settings.ensure_data_dir()
        db = Database(settings.resolved_database_url, busy_timeout_ms=settings.db_busy_timeout_ms)
        # One process owns a SQLite database, so its own commits are all there is to hear; on PostgreSQL the cache
        # waits for its listener before it is used.
        cache = AuthCache(ready=db.is_sqlite)
        watch(db.session_class, cache, notify=not db.is_sqlite)
        return cls(
            settings=settings,
            db=db,
            jwt=JwtCodec(settings.resolved_secret_key(), settings.jwt_issuer, settings.jwt_audience),
            login_limiter=LoginLimiter(
                settings.login_max_failures_per_user, settings.login_max_failures_per_ip, settings.login_window_s
            ),
            auth_cache=cache,
            auth_listener=None if db.is_sqlite else AuthListener(db.url, cache),
        )

    def require_bus(self) -> EventBus:
        if self.bus is None:
            raise RuntimeError("the event bus is not started")
        return self.bus

    def require_agents(self) -> AgentPool:
        if self.agents is None:
            raise RuntimeError("the agent runtime is not started")
        return self.agents
