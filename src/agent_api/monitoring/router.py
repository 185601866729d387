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
    return await _single(request, state, "database")


@router.get("/health/sdk")
async def health_sdk(request: Request, state: State) -> JSONResponse:
    return await _single(request, state, "sdk")


@router.get("/health/storage")
async def health_storage(request: Request, state: State) -> JSONResponse:
    return await _single(request, state, "storage")


@router.get("/costs/user/{user_id}", response_model=CostReport)
async def user_costs(
    user_id: uuid.UUID,
    caller: CurrentUser,
    db: DB,
    state: State,
    period: Period | None = None,
    start: Annotated[datetime | None, Query(description="Inclusive; ISO 8601, UTC when no offset is given")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive; defaults to now")] = None,
    group_by: GroupBy = "day",
) -> CostReport:
    await costs.readable_user(db, caller, user_id)
    chosen, begin, finish = costs.resolve_range(state.clock(), period, start, end)
    return await costs.cost_report(db, user_id, chosen, begin, finish, group_by)


@router.get("/costs/budget/{user_id}", response_model=BudgetRead)
async def user_budget(user_id: uuid.UUID, caller: CurrentUser, db: DB, state: State) -> BudgetRead:
    user = await costs.readable_user(db, caller, user_id)
    return await service.budget_of(db, state, user)


@router.get("/metrics/session/{session_id}", response_model=SessionMetrics)
async def session_metrics(session_id: uuid.UUID, caller: CurrentUser, db: DB, state: State) -> SessionMetrics:
    return await service.session_metrics(db, state, caller, session_id)
