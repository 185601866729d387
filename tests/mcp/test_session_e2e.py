"""A session with an MCP server attached, end to end: real SDK, real CLI, offline model, real stdio MCP server."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from agent_api.models import Session
from tests.conftest import SessionsApi, UserAccount, Users, app_state
from tests.mcp.conftest import SECRET, McpApi, stdio_config

pytestmark = pytest.mark.slow


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


class TestMcpToolInATurn:
    async def test_tool_call_is_recorded_with_its_result_and_status(
        self, app: object, client: httpx.AsyncClient, users: Users, sessions: SessionsApi, owner: UserAccount
    ) -> None:
        admin = McpApi(client, await users.create(admin=True))
        name = f"echo{uuid.uuid4().hex[:6]}"
        config = stdio_config(env={"ECHO_TOKEN": SECRET})
        server = await admin.create(name=name, server_type="stdio", config=config, is_global=True)

        tool = f"mcp__{name}__echo"
        s = await sessions.create(name="with mcp", mcp_server_ids=[server["id"], server["id"]], allowed_tools=[tool])
        assert s["mcp_server_ids"] == [server["id"]]
        r = await sessions.query(s["id"], f'mcp {name} echo {{"text": "hi"}}')
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["turn_status"] == "completed" and done["is_error"] is False, done

        calls = await sessions.items(s["id"], "tool-calls")
        assert [c["name"] for c in calls] == [tool]
        assert calls[0]["input"] == {"text": "hi"} and calls[0]["status"] == "completed"
        assert "echo: hi" in str(calls[0]["output"])
        assert "echo: hi" in done["result"]

        # The server env (with its secret) goes to the CLI in a 0600 file, so no command line on the host shows it.
        assert not [p for p in Path("/proc").glob("[0-9]*") if SECRET.encode() in _cmdline(p)]
        assert not list(app_state(app).settings.data_dir.rglob(f"mcp-{s['id']}.json"))

        async with app_state(app).db.transaction(readonly=True) as db:
            row = await db.get(Session, uuid.UUID(s["id"]))
            assert row is not None
            assert row.mcp_status == [{"name": name, "status": "connected"}]
