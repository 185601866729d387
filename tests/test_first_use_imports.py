"""Packages only some requests need are imported on first use: a started server that has not needed them does not
hold them (their memory: bench/memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent_api import migrate
from tests.conftest import TEST_SECRET

# Alembic: only when a migration is pending (migrate.py). The agent SDK and `mcp`: the first agent or MCP health
# check (runtime/agent.py, turns/runner.py, mcp_servers/service.py). Jinja2: the first HTML report. WeasyPrint: a
# PDF, in its own child process.
FIRST_USE = ("alembic", "claude_agent_sdk", "mcp", "jinja2", "weasyprint")

START_AND_LIST = """
import asyncio, sys
from agent_api.app import create_app

async def main() -> None:
    app = create_app()
    async with app.router.lifespan_context(app):
        print(" ".join(sorted(name for name in sys.argv[1:] if name in sys.modules)))

asyncio.run(main())
"""


def test_a_started_server_holds_none_of_them(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'agent-api.db'}"
    migrate.upgrade(url)  # as on any start after the first: nothing left to migrate
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_API_", "ANTHROPIC_"))}
    env |= {
        "AGENT_API_DATA_DIR": str(tmp_path / "data"),
        "AGENT_API_DATABASE_URL": url,
        "AGENT_API_SECRET_KEY": TEST_SECRET,
        "AGENT_API_SPARE_AGENTS": "0",  # a spare agent would load the SDK at start, as it should
        "AGENT_API_SCHEDULER_ENABLED": "false",
        "AGENT_API_LOG_LEVEL": "WARNING",
    }
    run = subprocess.run(
        [sys.executable, "-c", START_AND_LIST, *FIRST_USE], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [], run.stdout
