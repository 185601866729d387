"""`/monitoring`: health (no auth). Costs and metrics join it with their issues."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agent_api import __version__
from agent_api.deps import State
from agent_api.errors import error_body, request_id_of
from agent_api.monitoring import health

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
