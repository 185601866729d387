"""The application factory: settings -> state -> middleware, error handlers and routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from agent_api import __version__, migrate
from agent_api.auth import service as auth_service
from agent_api.auth.router import router as auth_router
from agent_api.config import Settings, get_settings
from agent_api.errors import install_error_handlers
from agent_api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from agent_api.monitoring.router import router as monitoring_router
from agent_api.state import AppState

log = logging.getLogger("agent_api")
API_PREFIX = "/api/v1"


def _api_router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(auth_router)
    api.include_router(monitoring_router)
    return api


async def _start(state: AppState) -> None:
    if state.settings.auto_migrate:
        await asyncio.to_thread(migrate.upgrade, state.db.url)
    try:
        await auth_service.bootstrap_admin(state)
    except Exception:
        # The server still starts, so health can report the database as down.
        log.exception("could not create the bootstrap admin")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = AppState.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await _start(state)
        log.info("agent-api %s ready (database: %s)", __version__, state.db.engine.dialect.name)
        try:
            yield
        finally:
            await state.background.cancel_all()
            await state.db.dispose()

    app = FastAPI(title="agent-api", version=__version__, lifespan=lifespan)
    app.state.agent_api = state
    install_error_handlers(app)
    app.include_router(_api_router())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
