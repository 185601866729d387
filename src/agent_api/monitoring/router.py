"""`/monitoring`: health (no auth); costs, budgets and session metrics (the user themself, or an admin)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from agent_api import __version__
from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB, State
from agent_api.errors import error_body, request_id_of
from agent_api.monitoring import costs, health, service
from agent_api.monitoring.deps import ReadableUser
from agent_api.monitoring.schemas import BudgetRead, CostReport, GroupBy, Period, SessionMetrics

router = APIRouter(prefix="/monitoring", tags=["monitoring"])


def _health_response(request: Request, status: str, body: dict[str, Any], failed: list[str]) -> JSONResponse:
    body = {"status": status, "version": __version__, "timestamp": datetime.now(UTC).isoformat(), **body}
    if status != "down":
        return JSONResponse(body)
    message = f"Unavailable: {', '.join(failed)}"
    return JSONResponse({**body, **error_body("service_unavailable", message, request_id_of(request), failed)}, 503)


@router.get("/health")
async def health_all(request: Request, state: State) -> JSONResponse:
    """Overall health, `ok`, `degraded` or `down`, with each check's status and latency; no authentication.
    503 when the database or storage is down."""
    checks = await health.run_all(state)
    failed = [name for name, c in checks.items() if c["status"] == "down"]
    return _health_response(request, health.overall_status(checks), {"checks": checks}, failed)


async def _single(request: Request, state: State, name: str) -> JSONResponse:
    result = await health.CHECKS[name](state)
    return _health_response(
        request, result["status"], {"check": name, **result}, [name] if result["status"] == "down" else []
    )


@router.get("/health/database")
async def health_database(request: Request, state: State) -> JSONResponse:
    """A real round trip to the database, with its latency and backend; no authentication. 503 when it
    fails."""
    return await _single(request, state, "database")


@router.get("/health/sdk")
async def health_sdk(request: Request, state: State) -> JSONResponse:
    """The claude-agent-sdk version, whether its CLI is present, the model endpoint and the sandbox mode; no
    authentication. `degraded` (never 503) when something is missing."""
    return await _single(request, state, "sdk")


@router.get("/health/storage")
async def health_storage(request: Request, state: State) -> JSONResponse:
    """Whether the data directory is writable, with free and total bytes; no authentication. 503 when it
    is not."""
    return await _single(request, state, "storage")


@router.get("/costs/user/{user_id}", response_model=CostReport)
async def user_costs(
    user: ReadableUser,
    db: DB,
    state: State,
    period: Period | None = None,
    start: Annotated[datetime | None, Query(description="Inclusive; ISO 8601, UTC when no offset is given")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive; defaults to now")] = None,
    group_by: GroupBy = "day",
) -> CostReport:
    """A user's costs over a named `period` (default monthly) or `start`/`end`: totals and a breakdown by
    `group_by`. The user themself or an admin, 404 for anyone else; 422 `invalid_range` for a bad or mixed range."""
    chosen, begin, finish = costs.resolve_range(state.clock(), period, start, end)
    return await costs.cost_report(db, user.id, chosen, begin, finish, group_by)


@router.get("/costs/budget/{user_id}", response_model=BudgetRead)
async def user_budget(user: ReadableUser, db: DB, state: State) -> BudgetRead:
    """A user's monthly budget, this month's spend, what is left and whether it is exceeded. The user
    themself or an admin; 404 for anyone else."""
    return await service.budget_of(db, state, user)


@router.get("/metrics/session/{session_id}", response_model=SessionMetrics)
async def session_metrics(session_id: uuid.UUID, caller: CurrentUser, db: DB, state: State) -> SessionMetrics:
    """A session's current totals plus turn and tool-call latency (count, percentiles, max, mean; per
    tool too). The session's owner or an admin; 404 for anyone else."""
    return await service.session_metrics(db, state, caller, session_id)
