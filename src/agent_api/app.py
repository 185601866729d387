"""The application factory: settings -> state -> middleware, error handlers and routers."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.engine import make_url

from agent_api import __version__, migrate, openapi_errors
from agent_api.admin.router import router as admin_router
from agent_api.auth import service as auth_service
from agent_api.auth.router import router as auth_router
from agent_api.bus import create_bus
from agent_api.config import Settings, get_settings
from agent_api.console.router import router as console_router
from agent_api.dispatcher import InProcessDispatcher, Jobs
from agent_api.errors import install_error_handlers
from agent_api.logs import redact_server_logs
from agent_api.mcp_servers.router import router as mcp_servers_router
from agent_api.metrics import HttpMetricsMiddleware
from agent_api.middleware import BodySizeLimitMiddleware, InputHygieneMiddleware, RequestContextMiddleware
from agent_api.monitoring.prometheus import router as prometheus_router
from agent_api.monitoring.router import router as monitoring_router
from agent_api.reports.router import router as reports_router
from agent_api.runtime import confine
from agent_api.runtime import endpoint as model_endpoint
from agent_api.runtime.agent import RuntimeConfig
from agent_api.runtime.mcp_relay import McpRelay
from agent_api.runtime.pool import AgentPool
from agent_api.session_templates.router import router as session_templates_router
from agent_api.sessions import service as session_service
from agent_api.sessions.router import router as sessions_router
from agent_api.state import AppState
from agent_api.streaming.router import router as streaming_router
from agent_api.tasks import runner as task_runner
from agent_api.tasks.router import router as tasks_router
from agent_api.tasks.scheduler import Scheduler
from agent_api.turns import runner as turn_runner
from agent_api.webhooks import delivery as webhook_delivery
from agent_api.webhooks.router import router as webhooks_router

log = logging.getLogger("agent_api")
API_PREFIX = "/api/v1"
# Deliveries this process queues wake the loop at once; this bounds how late it sees retries and other processes'.
WEBHOOK_IDLE_LOOK_S = 5.0


def _api_router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(auth_router)
    api.include_router(monitoring_router)
    api.include_router(sessions_router)
    api.include_router(streaming_router)
    api.include_router(session_templates_router)
    api.include_router(tasks_router)
    api.include_router(reports_router)
    api.include_router(mcp_servers_router)
    api.include_router(admin_router)
    api.include_router(webhooks_router)
    return api


class SandboxUnavailable(RuntimeError):
    pass


def agent_tmp_root(settings: Settings) -> Path:
    """Where agents get their own temporary directories: short (see `RuntimeConfig.tmp_dir`), one per data dir."""
    tag = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()).resolve() / f"agent-api-{tag}"


def private_paths(settings: Settings) -> tuple[str, ...]:
    """What agents' sandboxed Bash must not read: the data dir, other sessions' temporary directories, and a SQLite
    database kept elsewhere."""
    # The CLI's default temporary directory, shared by every process of this user, is no agent's business either.
    shared_tmp = Path(tempfile.gettempdir()).resolve() / f"claude-{os.getuid()}"
    paths = [str(settings.data_dir.resolve()), str(agent_tmp_root(settings)), str(shared_tmp)]
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        database = Path(url.database).resolve()
        paths += [str(database), f"{database}-wal", f"{database}-shm", f"{database}-journal"]
    return tuple(paths)


async def _start_runtime(state: AppState) -> None:
    settings = state.settings
    sandbox_ok = model_endpoint.sandbox_available()
    if settings.sandbox == "required" and not sandbox_ok:
        raise SandboxUnavailable("AGENT_API_SANDBOX=required but bubblewrap (bwrap) and socat are not installed")
    state.bash_sandboxed = sandbox_ok and settings.sandbox != "off"
    state.endpoint = await model_endpoint.start_endpoint(settings.cli_max_retries)
    state.mcp_relay = McpRelay()
    await state.mcp_relay.start()
    config_dir = settings.data_dir / "claude"
    config_dir.mkdir(parents=True, exist_ok=True)
    if not state.bash_sandboxed:
        log.warning(
            "Bash runs WITHOUT a sandbox: an agent whose Bash call is approved can read this server's data dir "
            "(secret key, database, other users' files). Install bubblewrap and socat for a multi-user server."
        )
    else:
        await asyncio.to_thread(confine.own_pid_namespace_available)  # probed once, here, not at an agent's start
    state.agents = AgentPool(
        RuntimeConfig(
            env=state.endpoint.env,
            config_dir=config_dir.resolve(),
            bash_sandboxed=state.bash_sandboxed,
            private_paths=private_paths(settings),
            tmp_root=agent_tmp_root(settings),
            mcp_relay=state.mcp_relay,
        ),
        max_live=settings.max_live_sessions,
        max_live_per_user=settings.max_live_sessions_per_user,
        idle_timeout_s=settings.idle_timeout_s,
        spares=settings.spare_agents,
        spare_spec=partial(turn_runner.spare_spec, state),
    )
    state.agents.start_reaper()
    state.agents.start_spares()
    if isinstance(state.dispatcher, InProcessDispatcher):
        state.dispatcher.agents = state.agents


async def _start(state: AppState) -> None:
    if state.settings.auto_migrate:
        await asyncio.to_thread(migrate.upgrade, state.db.url)
    bus = create_bus(state.db.url)
    await bus.start()
    state.bus = state.db.bus = bus
    if state.auth_listener is not None:  # PostgreSQL: other processes' revocations reach this one's login cache
        state.auth_listener.ensure_started(state.background.spawn)
    try:
        await auth_service.bootstrap_admin(state)
        await session_service.recover_after_restart(state)
        await task_runner.recover_after_restart(state)
    except Exception:
        # The server still starts, so health can report the database as down.
        log.exception("start-up database work failed")
    await _start_runtime(state)
    state.db.wake_deliveries = state.dispatcher.wake_deliveries
    state.dispatcher.start_deliveries(WEBHOOK_IDLE_LOOK_S)
    if state.settings.scheduler_enabled:
        state.dispatcher.start_schedules(state.settings.scheduler_interval_s)


async def _stop(state: AppState) -> None:
    """Drain: refuse new turns, interrupt running ones (they record themselves), end the agent processes. Under
    `agent-api serve` the drain already ran at SIGTERM, before the connections closed (`cli.DrainingServer`)."""
    state.dispatcher.draining = True
    if state.bus is not None:
        await state.bus.shut_down_subscribers()  # stream clients are closed with 1012 and reconnect elsewhere
    await state.dispatcher.drain()
    await state.background.cancel_all()
    if state.bus is not None:
        await state.bus.stop()
    if state.endpoint is not None:
        await state.endpoint.stop()
    if state.mcp_relay is not None:
        await state.mcp_relay.stop()
    await state.db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    redact_server_logs()
    state = AppState.from_settings(settings)
    state.dispatcher = InProcessDispatcher(
        Jobs(
            run_turn=partial(turn_runner.run_turn, state),
            run_execution=partial(task_runner.run_execution, state),
            warm_agent=partial(turn_runner.warm_agent, state),
            tick_schedules=Scheduler(state).tick,
            deliver_webhooks=partial(webhook_delivery.deliver_due, state),
        ),
        agents=None,
        registry=state.background,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await _start(state)
        # What is alive after start-up (modules, the app, the ORM's mappers) stays alive: taking it out of the
        # collector's view makes each full collection, and the pause it puts on every live stream, much shorter.
        gc.collect()
        gc.freeze()
        log.info("agent-api %s ready (database: %s)", __version__, state.db.engine.dialect.name)
        try:
            yield
        finally:
            await _stop(state)

    app = FastAPI(title="agent-api", version=__version__, lifespan=lifespan)
    app.state.agent_api = state
    install_error_handlers(app)
    openapi_errors.install(app)
    app.include_router(_api_router())
    app.include_router(console_router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(InputHygieneMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.metrics_enabled:
        # Off the API prefix, where scrapers look; outside the body cap, so 413s are counted too.
        app.include_router(prometheus_router)
        app.add_middleware(HttpMetricsMiddleware, metrics=state.metrics)
    app.add_middleware(RequestContextMiddleware)
    return app
