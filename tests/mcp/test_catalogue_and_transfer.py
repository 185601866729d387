"""The template catalogue, and Claude Desktop import/export."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Users, assert_error_shape
from tests.mcp.conftest import SECRET, McpApi, remote

# The shape people paste from claude_desktop_config.json, with one entry that cannot work.
DESKTOP_CONFIG: dict[str, Any] = {
    "mcpServers": {
        "filesystem": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop", "/Users/me/Downloads"],
        },
        "github": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": SECRET},
        },
        "linear": {"type": "sse", "url": "https://mcp.linear.app/sse"},
        "notion": {
            "type": "http",
            "url": "https://mcp.notion.com/mcp",
            "headers": {"Authorization": f"Bearer {SECRET}"},
        },
        "intranet": {"type": "http", "url": "http://169.254.169.254/latest"},
    }
}
GOOD = ["filesystem", "github", "linear", "notion"]


class TestTemplates:
    async def test_catalogue_lists_the_popular_servers(self, owner_api: McpApi) -> None:
        r = await owner_api.get("/templates")
        assert r.status_code == 200, r.text
        ids = {t["id"] for t in r.json()["items"]}
        assert {
            "filesystem",
            "git",
            "fetch",
            "memory",
            "sqlite",
            "postgres",
            "github",
            "slack",
            "brave-search",
            "playwright",
            "puppeteer",
            "sequential-thinking",
            "time",
            "everything",
        } <= ids
        github = next(t for t in r.json()["items"] if t["id"] == "github")
        assert github["server_type"] == "stdio" and github["command"] == "npx" and github["docs"]
        assert github["env"] == [
            {"name": "GITHUB_PERSONAL_ACCESS_TOKEN", "description": "A GitHub personal access token", "required": True}
        ]

    async def test_create_from_template_fills_placeholders(self, admin_api: McpApi) -> None:
        name = f"fs{uuid.uuid4().hex[:6]}"
        created = await admin_api.create(template="filesystem", name=name, values={"allowed_directory": "/srv/data"})
        assert created["server_type"] == "stdio" and created["name"] == name
        assert created["config"]["command"] == "npx"
        assert created["config"]["args"] == ["-y", "@modelcontextprotocol/server-filesystem", "/srv/data"]

    async def test_required_env_is_checked_and_stored_as_a_secret(self, admin_api: McpApi) -> None:
        name = f"gh{uuid.uuid4().hex[:6]}"
        r = await admin_api.post("", json={"template": "github", "name": name})
        assert_error_shape(r, 422, "invalid_template_values")
        assert "GITHUB_PERSONAL_ACCESS_TOKEN" in r.json()["error"]["message"]
        created = await admin_api.create(template="github", name=name, env={"GITHUB_PERSONAL_ACCESS_TOKEN": SECRET})
        assert created["config"]["env"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": "***"}

    @pytest.mark.parametrize(
        "body",
        [
            {"template": "no-such-template"},
            {"template": "filesystem"},
            {"template": "filesystem", "values": {"allowed_directory": "/x", "other": "y"}},
        ],
    )
    async def test_bad_template_requests(self, admin_api: McpApi, body: dict[str, Any]) -> None:
        assert_error_shape(await admin_api.post("", json=body), 422, "invalid_template_values")

    async def test_a_blank_placeholder_is_refused(self, admin_api: McpApi) -> None:
        body = {"template": "filesystem", "values": {"allowed_directory": ""}}
        assert_error_shape(await admin_api.post("", json=body), 422)

    async def test_a_template_is_still_stdio_so_non_admins_get_403(self, owner_api: McpApi) -> None:
        r = await owner_api.post("", json={"template": "time"})
        assert_error_shape(r, 403, "mcp_stdio_admin_only")


class TestImport:
    async def test_json_import_answers_per_entry(self, admin_api: McpApi) -> None:
        r = await admin_api.post("/import", json=DESKTOP_CONFIG)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["imported"] == GOOD and body["skipped"] == []
        assert [e["server"] for e in body["errors"]] == ["intranet"]
        assert "link-local" in body["errors"][0]["error"]
        assert body["summary"].startswith("4 imported, 0 skipped")
        assert SECRET not in r.text
        assert sorted(await admin_api.own_names()) == sorted(GOOD)
        items = {i["name"]: i for i in (await admin_api.get(page_size=100)).json()["items"]}
        assert items["linear"]["server_type"] == "sse" and items["notion"]["config"]["headers"] == {
            "Authorization": "***"
        }

        again = (await admin_api.post("/import", json=DESKTOP_CONFIG)).json()
        assert again["imported"] == [] and again["skipped"] == GOOD

    async def test_file_upload_and_override(self, admin_api: McpApi) -> None:
        await admin_api.create(name="linear", server_type="http", config={"url": "https://old.example.com/mcp"})
        files = {"file": ("claude_desktop_config.json", json.dumps(DESKTOP_CONFIG).encode(), "application/json")}
        r = await admin_api.post("/import", files=files, params={"override_existing": "true"})
        assert r.status_code == 200, r.text
        assert r.json()["imported"] == GOOD and [e["server"] for e in r.json()["errors"]] == ["intranet"]
        linear = next(i for i in (await admin_api.get(page_size=100)).json()["items"] if i["name"] == "linear")
        assert linear["server_type"] == "sse" and linear["config"]["url"] == "https://mcp.linear.app/sse"

    async def test_non_admin_gets_the_stdio_entries_as_errors(self, owner_api: McpApi) -> None:
        body = (await owner_api.post("/import", json=DESKTOP_CONFIG)).json()
        assert body["imported"] == ["linear", "notion"]
        assert {e["server"] for e in body["errors"]} == {"filesystem", "github", "intranet"}

    @pytest.mark.parametrize(
        "payload",
        [b"not json", b'{"servers": {}}', b'["mcpServers"]', b'{"mcpServers": []}'],
    )
    async def test_not_a_desktop_config_is_422(self, owner_api: McpApi, payload: bytes) -> None:
        r = await owner_api.post("/import", content=payload, headers={"content-type": "application/json"})
        assert_error_shape(r, 422)

    async def test_upload_without_the_file_field_is_422(self, owner_api: McpApi) -> None:
        r = await owner_api.post("/import", files={"other": ("x.json", b"{}", "application/json")})
        assert_error_shape(r, 422, "file_missing")

    async def test_bad_entries_do_not_stop_good_ones(self, owner_api: McpApi) -> None:
        config = {
            "mcpServers": {
                "ok": {"url": "https://mcp.example.com/mcp"},
                "bad name": {"url": "https://mcp.example.com/mcp"},
                "nothing": {"args": ["x"]},
                "weird": {"type": "carrier-pigeon", "url": "https://mcp.example.com"},
                "listy": ["command"],
            }
        }
        body = (await owner_api.post("/import", json=config)).json()
        assert body["imported"] == ["ok"]
        assert [e["server"] for e in body["errors"]] == ["bad name", "nothing", "weird", "listy"]


class TestExport:
    async def test_round_trip_into_another_user_is_lossless_except_secrets(
        self, admin_api: McpApi, users: Users, client: httpx.AsyncClient
    ) -> None:
        await admin_api.post("/import", json=DESKTOP_CONFIG)
        await admin_api.create(
            name="described",
            server_type="http",
            config={"url": "https://d.example.com/mcp"},
            description="kept",
            is_enabled=False,
        )
        exported = (await admin_api.get("/export")).json()
        assert set(exported["mcpServers"]) == {*GOOD, "described"}
        assert exported["mcpServers"]["github"]["env"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": "***"}
        assert SECRET not in json.dumps(exported)

        other = McpApi(client, await users.create(admin=True))
        answer = (await other.post("/import", json=exported)).json()
        assert sorted(answer["imported"]) == sorted([*GOOD, "described"]) and answer["errors"] == []
        assert "redacted secret" in answer["summary"]
        assert (await other.get("/export")).json() == exported

        with_secrets = (await admin_api.get("/export", include_secrets=True)).json()
        assert with_secrets["mcpServers"]["github"]["env"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": SECRET}
        third = McpApi(client, await users.create(admin=True))
        await third.post("/import", json=with_secrets)
        assert (await third.get("/export", include_secrets=True)).json() == with_secrets

    async def test_own_servers_keep_their_names_beside_a_global_namesake(
        self, owner_api: McpApi, admin_api: McpApi
    ) -> None:
        name = f"dup{uuid.uuid4().hex[:6]}"
        await admin_api.create(**remote(name, is_global=True))
        await owner_api.create(**remote(name, url="https://own.example.com/mcp"))
        r = await owner_api.get("/export", include_global="true")
        exported = r.json()["mcpServers"]
        assert exported[name]["url"] == "https://own.example.com/mcp"
        assert [k for k in exported if k.startswith(f"{name}_")]  # the global one is the one renamed
