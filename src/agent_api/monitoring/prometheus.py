"""`GET /metrics`: the Prometheus exposition, off the API prefix. Gauges that describe the whole system (sessions
and task executions by status) are read from the database at scrape time, so every replica reports the same."""

from __future__ import annotations

import hmac
from typing import Annotated, get_args

from fastapi import APIRouter, Header
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from agent_api.agent_settings import SessionStatus
from agent_api.deps import DB, State
from agent_api.errors import Unauthorized
from agent_api.models.task import EXECUTION_STATUSES
from agent_api.monitoring import repository as repo

router = APIRouter(tags=["monitoring"])

SESSION_STATUSES = get_args(SessionStatus)


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(db: DB, state: State, authorization: Annotated[str | None, Header()] = None) -> Response:
    token = state.settings.metrics_token
    if token and not hmac.compare_digest(authorization or "", f"Bearer {token}"):
        raise Unauthorized("A metrics token is required", code="invalid_token")
    m = state.metrics
    m.live_agents.set(len(state.agents) if state.agents is not None else 0)
    m.running_turns.set(state.dispatcher.running_turns())
    m.set_labelled(m.sessions, await repo.sessions_by_status(db), SESSION_STATUSES)
    m.set_labelled(m.task_executions, await repo.task_executions_by_status(db), EXECUTION_STATUSES)
    m.set_pool(state.db.engine.pool)  # after the queries, so this scrape's own connection is counted
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
