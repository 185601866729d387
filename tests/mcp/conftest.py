"""Helpers for the MCP server tests: the test servers, an API wrapper, process checks, and factory rows."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api.models import Session
from tests.conftest import UserAccount, Users, app_state

SERVERS = Path(__file__).parent / "servers"
ECHO_SERVER = SERVERS / "echo_server.py"
MISBEHAVING = SERVERS / "misbehaving.py"
SECRET = "sk-live-THIS-IS-A-SECRET-6f1d2c"


def stdio_config(*args: str, script: Path = ECHO_SERVER, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(script), *args], **extra}


def process_gone(pid: int) -> bool:
    """True when the process no longer exists, or is a zombie only waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class McpApi:
    """Thin helpers over the /mcp-servers routes for one user."""

    base = "/api/v1/mcp-servers"

    def __init__(self, client: httpx.AsyncClient, user: UserAccount) -> None:
        self.client = client
        self.user = user

    async def create(self, **body: Any) -> dict[str, Any]:
        r = await self.post("", json=body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def post(self, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**self.user.headers, **(headers or {})}
        return await self.client.post(f"{self.base}{path}", headers=headers, timeout=60, **kwargs)

    async def get(self, path: str = "", **params: Any) -> httpx.Response:
        return await self.client.get(f"{self.base}{path}", params=params, headers=self.user.headers)

    async def patch(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.patch(f"{self.base}{path}", json=body, headers=self.user.headers)

    async def own_names(self) -> list[str]:
        """Names of the servers this user owns (global ones of others are visible too, and left out)."""
        r = await self.get(page_size=100)
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()["items"] if i["user_id"] == self.user.id]

    async def delete(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.delete(f"{self.base}{path}", params=params, headers=self.user.headers)


@pytest.fixture
async def admin(users: Users) -> UserAccount:
    return await users.create(admin=True)


@pytest.fixture
def admin_api(client: httpx.AsyncClient, admin: UserAccount) -> McpApi:
    return McpApi(client, admin)


@pytest.fixture
def owner_api(client: httpx.AsyncClient, owner: UserAccount) -> McpApi:
    return McpApi(client, owner)


def remote(
    name: str, url: str = "https://mcp.example.com/mcp", headers: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"name": name, "server_type": "http", "config": {"url": url, "headers": headers or {}}, **extra}


async def insert_session(app: object, user_id: str, status: str, server_ids: list[str]) -> uuid.UUID:
    """A session row in a given status without starting an agent (for rules that only read the row)."""
    async with app_state(app).db.transaction() as db:
        s = Session(id=uuid.uuid4(), user_id=uuid.UUID(user_id), status=status, mcp_server_ids=server_ids)
        db.add(s)
    return s.id
