"""Health checks: each one a real probe with its latency; the database and storage are critical, the SDK is not."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import text

from agent_api.state import AppState

Status = Literal["ok", "degraded", "down"]
CHECK_TIMEOUT_S = 5.0
CRITICAL = ("database", "storage")


def _result(status: Status, started: float, **details: Any) -> dict[str, Any]:
    return {"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 2), **details}


async def check_database(state: AppState) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            async with state.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach it is "down", never a 500
        return _result("down", started, backend=state.db.engine.dialect.name, error=type(exc).__name__)
    return _result("ok", started, backend=state.db.engine.dialect.name)


def _probe_storage(data_dir: Path) -> dict[str, Any]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".health-", delete=True) as f:
        f.write(b"ok")
        f.flush()
        os.fsync(f.fileno())
    usage = shutil.disk_usage(data_dir)
    return {"free_bytes": usage.free, "total_bytes": usage.total}


async def check_storage(state: AppState) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        details = await asyncio.wait_for(asyncio.to_thread(_probe_storage, state.settings.data_dir), CHECK_TIMEOUT_S)
    except Exception as exc:
        return _result("down", started, writable=False, error=type(exc).__name__)
    return _result("ok", started, writable=True, **details)


def _sdk_facts() -> dict[str, Any]:
    try:
        import claude_agent_sdk
    except ImportError:
        return {"installed": False}
    version = importlib.metadata.version("claude-agent-sdk")
    cli = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    cli_path = str(cli) if cli.is_file() else shutil.which("claude")
    return {"installed": True, "version": version, "cli_present": cli_path is not None, "cli_path": cli_path}


async def check_sdk(state: AppState) -> dict[str, Any]:
    started = time.perf_counter()
    facts = await asyncio.to_thread(_sdk_facts)
    endpoint = state.endpoint
    facts["model_endpoint"] = {
        "kind": endpoint.kind if endpoint else None,
        "model": endpoint.model if endpoint else None,
        "base_url": endpoint.base_url if endpoint else None,
        "offline": endpoint is not None and endpoint.kind == "offline",
    }
    if endpoint is not None and endpoint.kind == "offline":
        facts["warning"] = "OFFLINE MODEL: no ANTHROPIC_API_KEY is set; agents answer from the built-in offline model"
    facts["sandbox"] = {"mode": state.settings.sandbox, "bash_sandboxed": state.bash_sandboxed}
    facts["live_agents"] = len(state.agents) if state.agents is not None else 0
    healthy = facts.get("installed") and facts.get("cli_present") and endpoint is not None
    return _result("ok" if healthy else "degraded", started, **facts)


CHECKS: dict[str, Callable[[AppState], Awaitable[dict[str, Any]]]] = {
    "database": check_database,
    "storage": check_storage,
    "sdk": check_sdk,
}


def overall_status(checks: dict[str, dict[str, Any]]) -> Status:
    if any(checks[name]["status"] == "down" for name in CRITICAL if name in checks):
        return "down"
    if any(c["status"] != "ok" for c in checks.values()):
        return "degraded"
    return "ok"


async def run_all(state: AppState) -> dict[str, dict[str, Any]]:
    names = list(CHECKS)
    results = await asyncio.gather(*(CHECKS[n](state) for n in names))
    return dict(zip(names, results, strict=True))
