"""`GET /metrics`: the Prometheus exposition, off the API prefix. Gauges that describe the whole system (sessions
and task executions by status) are read from the database at scrape time, so every replica reports the same.

Who may scrape: with `metrics_token` set, whoever presents it (401 otherwise); without one, only loopback clients
(a scraper on the host, or behind the reverse proxy whose `X-Forwarded-For` uvicorn trusts), and everyone only when
`metrics_public` says so. Others get the 404 of an unknown path: counts of users' sessions, turns and spend are not
for the internet, and a server that forgot to set a token should not say it has something to show.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, get_args

from fastapi import APIRouter, Depends, Header
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request

from agent_api.agent_settings import SessionStatus
from agent_api.deps import DB, State
from agent_api.errors import NotFound, Unauthorized
from agent_api.models.task import EXECUTION_STATUSES
from agent_api.monitoring import repository as repo

router = APIRouter(tags=["monitoring"])

SESSION_STATUSES = get_args(SessionStatus)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a Unix socket peer or a name: nothing proves it is local
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


async def _may_scrape(request: Request, state: State, authorization: Annotated[str | None, Header()] = None) -> None:
    token = state.settings.metrics_token
    if token:
        if not hmac.compare_digest(authorization or "", f"Bearer {token}"):
            raise Unauthorized("A metrics token is required", code="invalid_token")
        return
    if state.settings.metrics_public:
        return
    if not _is_loopback(request.client.host if request.client else None):
        raise NotFound("Not Found")


@router.get("/metrics", response_class=Response, include_in_schema=False, dependencies=[Depends(_may_scrape)])
async def metrics(db: DB, state: State) -> Response:
    m = state.metrics
    m.live_agents.set(len(state.agents) if state.agents is not None else 0)
    m.running_turns.set(state.dispatcher.running_turns())
    m.set_labelled(m.sessions, await repo.sessions_by_status(db), SESSION_STATUSES)
    m.set_labelled(m.task_executions, await repo.task_executions_by_status(db), EXECUTION_STATUSES)
    m.set_pool(state.db.engine.pool)  # after the queries, so this scrape's own connection is counted
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
