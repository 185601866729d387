"""The MCP server registry over HTTP: CRUD, who sees and changes what, the stdio policy, SSRF, secrets."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import Any

import httpx
import pytest

from agent_api.mcp_servers import service
from agent_api.models import McpServer
from tests.conftest import UserAccount, Users, app_state, assert_error_shape
from tests.mcp.conftest import SECRET, McpApi, insert_session, remote, stdio_config


class TestAuthentication:
    async def test_every_route_needs_a_token(self, client: httpx.AsyncClient) -> None:
        some = uuid.uuid4()
        for method, path in [
            ("GET", ""),
            ("POST", ""),
            ("GET", "/templates"),
            ("GET", "/export"),
            ("POST", "/import"),
            ("GET", f"/{some}"),
            ("PATCH", f"/{some}"),
            ("DELETE", f"/{some}"),
            ("POST", f"/{some}/health-check"),
        ]:
            r = await client.request(method, f"/api/v1/mcp-servers{path}", json={})
            assert_error_shape(r, 401, "unauthorized")


class TestCrud:
    async def test_create_read_list_update_delete(self, owner_api: McpApi) -> None:
        created = await owner_api.create(**remote("docs", description="team docs"))
        assert created["server_type"] == "http" and created["is_enabled"] is True and created["is_global"] is False
        assert (
            created["health_status"] == "unknown" and created["tools"] == [] and created["last_health_check_at"] is None
        )
        assert created["config"] == {"url": "https://mcp.example.com/mcp", "headers": {}}
        sid = created["id"]

        assert (await owner_api.get(f"/{sid}")).json()["name"] == "docs"
        assert await owner_api.own_names() == ["docs"]

        r = await owner_api.patch(f"/{sid}", {"description": "changed", "is_enabled": False})
        assert r.status_code == 200, r.text
        assert r.json()["description"] == "changed" and r.json()["is_enabled"] is False
        enabled = (await owner_api.get(is_enabled=True, page_size=100)).json()["items"]
        assert sid not in [i["id"] for i in enabled]

        assert (await owner_api.delete(f"/{sid}")).status_code == 204
        assert_error_shape(await owner_api.get(f"/{sid}"), 404, "mcp_server_not_found")

    async def test_name_is_unique_per_user_but_not_across_users(self, owner_api: McpApi, admin_api: McpApi) -> None:
        await owner_api.create(**remote("same"))
        assert_error_shape(await owner_api.post("", json=remote("same")), 409, "mcp_server_name_taken")
        await admin_api.create(**remote("same"))
        other = (await owner_api.create(**remote("other")))["id"]
        assert_error_shape(await owner_api.patch(f"/{other}", {"name": "same"}), 409, "mcp_server_name_taken")
        assert (await owner_api.get(f"/{other}")).json()["name"] == "other"

    @pytest.mark.parametrize(
        "body",
        [
            {"name": "bad name!", "server_type": "http", "config": {"url": "https://mcp.example.com"}},
            {"name": "x", "server_type": "ftp", "config": {"url": "https://mcp.example.com"}},
            {"name": "x", "server_type": "http", "config": {"command": "ls"}},
            {"name": "x", "server_type": "stdio", "config": {"url": "https://mcp.example.com"}},
            {"name": "x", "server_type": "http", "config": {"url": "https://mcp.example.com", "headers": {"a b": "c"}}},
        ],
    )
    async def test_bad_input_is_422_and_creates_nothing(self, owner_api: McpApi, body: dict[str, object]) -> None:
        assert_error_shape(await owner_api.post("", json=body), 422)
        assert await owner_api.own_names() == []

    async def test_unknown_and_unsettable_fields_are_ignored(self, owner_api: McpApi) -> None:
        """DESIGN: unknown fields are ignored and never stored; owner and health are not the client's to set."""
        body = {
            "name": "ignored-extras",
            "server_type": "http",
            "config": {"type": "http", "url": "https://mcp.example.com", "extra": 1},
            "user_id": str(uuid.uuid4()),
            "health_status": "healthy",
        }
        r = await owner_api.post("", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["user_id"] != body["user_id"] and created["health_status"] == "unknown"
        assert created["config"] == {"url": "https://mcp.example.com", "headers": {}}


class TestVisibility:
    async def test_another_users_server_is_404_everywhere(
        self, owner_api: McpApi, users: Users, client: httpx.AsyncClient
    ) -> None:
        sid = (await owner_api.create(**remote("mine")))["id"]
        other = McpApi(client, await users.create())
        assert_error_shape(await other.get(f"/{sid}"), 404, "mcp_server_not_found")
        assert_error_shape(await other.patch(f"/{sid}", {"description": "x"}), 404)
        assert_error_shape(await other.delete(f"/{sid}"), 404)
        assert_error_shape(await other.post(f"/{sid}/health-check"), 404)
        assert await other.own_names() == []
        assert sid not in [i["id"] for i in (await other.get(page_size=100)).json()["items"]]
        assert "mine" not in (await other.get("/export")).json()["mcpServers"]

    async def test_global_servers_are_visible_to_all_but_changed_only_by_admins(
        self, owner_api: McpApi, admin_api: McpApi, users: Users, client: httpx.AsyncClient
    ) -> None:
        sid = (await admin_api.create(**remote("shared"), is_global=True))["id"]
        assert sid in [i["id"] for i in (await owner_api.get()).json()["items"]]
        assert (await owner_api.get(f"/{sid}")).status_code == 200
        assert_error_shape(await owner_api.patch(f"/{sid}", {"description": "mine now"}), 403, "mcp_server_read_only")
        assert_error_shape(await owner_api.delete(f"/{sid}"), 403, "mcp_server_read_only")
        other_admin = McpApi(client, await users.create(admin=True))
        r = await other_admin.patch(f"/{sid}", {"description": "admins may"})
        assert r.status_code == 200 and r.json()["description"] == "admins may"

    async def test_only_admins_make_a_server_global(self, owner_api: McpApi) -> None:
        assert_error_shape(await owner_api.post("", json={**remote("g"), "is_global": True}), 403, "admin_required")
        sid = (await owner_api.create(**remote("g")))["id"]
        assert_error_shape(await owner_api.patch(f"/{sid}", {"is_global": True}), 403, "admin_required")
        assert (await owner_api.get(f"/{sid}")).json()["is_global"] is False


class TestStdioPolicy:
    async def test_non_admin_cannot_register_or_switch_to_stdio(self, owner_api: McpApi) -> None:
        body = {"name": "local", "server_type": "stdio", "config": stdio_config()}
        assert_error_shape(await owner_api.post("", json=body), 403, "mcp_stdio_admin_only")
        sid = (await owner_api.create(**remote("remote")))["id"]
        r = await owner_api.patch(f"/{sid}", {"server_type": "stdio", "config": stdio_config()})
        assert_error_shape(r, 403, "mcp_stdio_admin_only")
        assert (await owner_api.get(f"/{sid}")).json()["server_type"] == "http"

    async def test_admin_registers_stdio_stored_as_an_argv(self, admin_api: McpApi) -> None:
        created = await admin_api.create(name="local", server_type="stdio", config=stdio_config("--flag"))
        assert created["config"]["args"][-1] == "--flag" and created["config"]["env"] == {}


class TestSsrf:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8080/mcp",
            "http://10.0.0.1/mcp",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/mcp",
            "http://[::ffff:127.0.0.1]/mcp",
            "http://2130706433/mcp",
            "http://0x7f.1/mcp",
            "http://0177.0.0.1/mcp",
            "http://localhost:9000/mcp",
            "http://192.168.1.10/mcp",
            "http://0.0.0.0/mcp",
            "http://metadata.google.internal/computeMetadata/v1/",
            "ftp://files.example.com/mcp",
            "file:///etc/passwd",
            "https://user:pw@mcp.example.com/mcp",
            # Parsers that read "\\" as "/" (the agent CLI's) would connect to 169.254.169.254.
            "http://169.254.169.254\\.x.example.com/latest/meta-data/",
            "http://mcp%2eexample.com/mcp",
        ],
    )
    async def test_unsafe_urls_are_refused(self, owner_api: McpApi, url: str) -> None:
        r = await owner_api.post("", json=remote("target", url))
        assert_error_shape(r, 422, "mcp_url_not_allowed")
        assert await owner_api.own_names() == []

    async def test_an_update_to_an_unsafe_url_is_refused(self, owner_api: McpApi) -> None:
        sid = (await owner_api.create(**remote("ok")))["id"]
        r = await owner_api.patch(f"/{sid}", {"config": {"url": "http://127.0.0.1/mcp"}})
        assert_error_shape(r, 422, "mcp_url_not_allowed")
        assert (await owner_api.get(f"/{sid}")).json()["config"]["url"] == "https://mcp.example.com/mcp"


class TestSecrets:
    async def test_secrets_are_redacted_encrypted_kept_and_never_logged(
        self, app: object, admin_api: McpApi, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        headers = {"Authorization": f"Bearer {SECRET}", "X-Team": "blue"}
        created = await admin_api.create(**remote("api", headers=headers))
        assert created["config"]["headers"] == {"Authorization": "***", "X-Team": "***"}
        sid = created["id"]
        stdio = await admin_api.create(name="tool", server_type="stdio", config=stdio_config(env={"TOKEN": SECRET}))
        assert stdio["config"]["env"] == {"TOKEN": "***"}

        # Sending "***" back keeps the stored value; a new value replaces it.
        r = await admin_api.patch(
            f"/{sid}",
            {"config": {"url": "https://mcp.example.com/v2", "headers": {"Authorization": "***", "X-Team": "red"}}},
        )
        assert r.status_code == 200, r.text
        r = await admin_api.patch(f"/{sid}", {"config": {"url": "https://x.example.com", "headers": {"Nope": "***"}}})
        assert_error_shape(r, 422, "mcp_secret_missing")
        # http and sse share the config shape: switching keeps "***" headers too.
        r = await admin_api.patch(
            f"/{sid}",
            {
                "server_type": "sse",
                "config": {"url": "https://mcp.example.com/v2", "headers": {"Authorization": "***", "X-Team": "***"}},
            },
        )
        assert r.status_code == 200 and r.json()["server_type"] == "sse", r.text

        async with app_state(app).db.transaction() as db:
            row = await db.get(McpServer, uuid.UUID(sid))
            assert row is not None
            assert SECRET not in str(row.config) and SECRET not in (row.secrets_encrypted or "")
            revealed = service.revealed_config(app_state(app), row)
        assert revealed["headers"] == {"Authorization": f"Bearer {SECRET}", "X-Team": "red"}

        responses = [
            await admin_api.get(f"/{sid}"),
            await admin_api.get(),
            await admin_api.get("/export"),
            await admin_api.post(f"/{sid}/health-check"),
        ]
        for response in responses:
            assert response.status_code == 200, response.text
            assert SECRET not in response.text
        assert "***" in responses[2].text
        assert f"mcp server {sid} (http) registered" in caplog.text  # the capture does see our log lines
        assert SECRET not in caplog.text

    async def test_secrets_are_exported_only_to_their_owner_on_request(
        self, admin_api: McpApi, owner_api: McpApi
    ) -> None:
        name = f"shared-{uuid.uuid4().hex[:8]}"
        await admin_api.create(**remote(name, headers={"Authorization": SECRET}), is_global=True)
        own = await admin_api.get("/export", include_secrets=True)
        assert own.json()["mcpServers"][name]["headers"] == {"Authorization": SECRET}
        seen = await owner_api.get("/export", include_global=True, include_secrets=True)
        assert seen.json()["mcpServers"][name]["headers"] == {"Authorization": "***"}
        assert name not in (await owner_api.get("/export")).json()["mcpServers"]


class TestAttachAndDelete:
    async def test_check_attachable(
        self, app: object, owner_api: McpApi, admin_api: McpApi, owner: UserAccount
    ) -> None:
        mine = (await owner_api.create(**remote("mine")))["id"]
        shared = (await admin_api.create(**remote("shared"), is_global=True))["id"]
        private = (await admin_api.create(**remote("private")))["id"]
        off = (await owner_api.create(**remote("off"), is_enabled=False))["id"]
        state = app_state(app)
        async with state.db.transaction() as db:
            user = await db.get(service.User, uuid.UUID(owner.id))
            assert user is not None
            ids = [uuid.UUID(mine), uuid.UUID(shared), uuid.UUID(mine)]
            assert await service.check_attachable(db, user, ids) == [uuid.UUID(mine), uuid.UUID(shared)]
            for bad, code in [(private, "mcp_server_not_found"), (off, "mcp_server_disabled")]:
                with pytest.raises(service.ValidationFailed) as caught:
                    await service.check_attachable(db, user, [uuid.UUID(mine), uuid.UUID(bad)])
                assert caught.value.code == code and caught.value.details == {"mcp_server_id": bad}

    async def test_session_creation_checks_the_servers(
        self, client: httpx.AsyncClient, owner: UserAccount, owner_api: McpApi
    ) -> None:
        off = (await owner_api.create(**remote("off"), is_enabled=False))["id"]
        for ids, code in [([str(uuid.uuid4())], "mcp_server_not_found"), ([off], "mcp_server_disabled")]:
            r = await client.post("/api/v1/sessions", json={"mcp_server_ids": ids}, headers=owner.headers)
            assert_error_shape(r, 422, code)
        listed = await client.get("/api/v1/sessions", headers=owner.headers)
        assert listed.json()["total"] == 0

    async def test_delete_is_refused_while_a_running_session_uses_it(
        self, app: object, owner_api: McpApi, owner: UserAccount
    ) -> None:
        sid = (await owner_api.create(**remote("busy")))["id"]
        running = await insert_session(app, owner.id, "processing", [sid])
        await insert_session(app, owner.id, "paused", [sid])
        r = await owner_api.delete(f"/{sid}")
        body = assert_error_shape(r, 409, "mcp_server_in_use")
        assert body["error"]["details"] == {"session_ids": [str(running)]}  # type: ignore[index]
        assert (await owner_api.get(f"/{sid}")).status_code == 200
        assert (await owner_api.delete(f"/{sid}", force="true")).status_code == 204
        assert_error_shape(await owner_api.get(f"/{sid}"), 404)

    async def test_an_active_session_without_a_live_agent_does_not_block(
        self, app: object, owner_api: McpApi, owner: UserAccount
    ) -> None:
        sid = (await owner_api.create(**remote("idle")))["id"]
        await insert_session(app, owner.id, "active", [sid])
        assert (await owner_api.delete(f"/{sid}")).status_code == 204


class TestSlowDns:
    async def test_lookups_happen_outside_the_write_lock(
        self, owner_api: McpApi, client: httpx.AsyncClient, users: Users, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An import of URLs whose DNS hangs must not hold SQLite's write lock: another user's write goes through
        while the lookups are still waiting."""
        entered, release = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        real_getaddrinfo = loop.getaddrinfo

        async def slow_getaddrinfo(host: str, port: int, **kwargs: Any) -> Any:
            if host.startswith("slow-"):
                entered.set()
                await release.wait()
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]
            return await real_getaddrinfo(host, port, **kwargs)

        monkeypatch.setattr(loop, "getaddrinfo", slow_getaddrinfo)
        document = {
            "mcpServers": {f"s{i}": {"type": "http", "url": f"https://slow-{i}.example.com/mcp"} for i in range(3)}
        }
        importing = asyncio.create_task(owner_api.post("/import", json=document))
        await asyncio.wait_for(entered.wait(), 30)
        other = await users.create()
        try:
            # Without the fix this waits for the lock (the busy timeout, 30 s) and fails here.
            r = await asyncio.wait_for(client.post("/api/v1/sessions", json={}, headers=other.headers), 10)
            assert r.status_code == 201
        finally:
            release.set()
        result = (await importing).json()
        assert sorted(result["imported"]) == ["s0", "s1", "s2"] and result["errors"] == []
