"""The pure rules behind the registry: SSRF address checks, the stdio allowlist, settings, secrets, the directive."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from agent_api.config import Settings
from agent_api.errors import Conflict, Forbidden
from agent_api.mcp_servers import secrets
from agent_api.mcp_servers.policy import ensure_may_register_stdio, executable_allowlisted, runnable_reason
from agent_api.models import User
from agent_api.runtime import ssrf
from agent_api.runtime.offline_model import plan_reply


class TestSsrf:
    @pytest.mark.parametrize(
        ("host", "address"),
        [
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("10.0.0.1", "10.0.0.1"),
            ("example.com", None),
            ("256.1.1.1", None),
            ("08", None),
        ],
    )
    def test_numeric_host_forms(self, host: str, address: str | None) -> None:
        assert ssrf.inet_aton_form(host) == address

    async def test_every_resolved_address_is_checked(self, monkeypatch: pytest.MonkeyPatch) -> None:
        async def fake_getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in ("93.184.215.14", "10.1.2.3")]

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
        with pytest.raises(ssrf.UnsafeUrl, match="private"):
            await ssrf.check_url("https://rebind.example.com/mcp", [])
        await ssrf.check_url("https://rebind.example.com/mcp", ["REBIND.example.com."])  # allowlisted host

    def test_only_plain_hosts_parse(self) -> None:
        for url in ("http://169.254.169.254\\.evil.example/x", "http://a%2eb.example/", "http://exa mple.com/"):
            with pytest.raises(ssrf.UnsafeUrl, match="host may contain only"):
                ssrf._parsed(url)
        assert ssrf._parsed("https://MCP.example.com:8443/x?y=1") == ("https", "mcp.example.com")
        assert ssrf._parsed("http://[2606:4700::1111]:80/") == ("http", "2606:4700::1111")

    async def test_unresolvable_is_its_own_error(self) -> None:
        with pytest.raises(ssrf.UnresolvableHost):
            await ssrf.check_url("https://does-not-exist.invalid/mcp", [])

    def test_public_addresses_pass(self) -> None:
        assert ssrf.blocked_reason("93.184.215.14") is None
        assert ssrf.blocked_reason("2606:4700::1111") is None
        assert ssrf.blocked_reason("fd00:ec2::254") == "private or reserved"
        assert ssrf.blocked_reason("100.64.0.1") == "private or reserved"


class TestStdioPolicy:
    def test_allowlist_matches_bare_names_and_exact_paths_only(self) -> None:
        allow = ["npx", "/usr/local/bin/uvx"]
        assert executable_allowlisted("npx", allow)
        assert not executable_allowlisted("/tmp/evil/npx", allow)
        assert not executable_allowlisted("./npx", allow)
        assert executable_allowlisted("/usr/local/bin/../bin/uvx", allow)
        assert not executable_allowlisted("uvx", allow)

    def test_settings_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AGENT_API_MCP_STDIO", "allowlist")
        monkeypatch.setenv("AGENT_API_MCP_STDIO_ALLOWLIST", "npx, uvx")
        monkeypatch.setenv("AGENT_API_MCP_ALLOWED_HOSTS", "mcp.internal,127.0.0.1")
        settings = Settings()
        assert settings.mcp_stdio_allowlist == ["npx", "uvx"]
        assert settings.mcp_allowed_hosts == ["mcp.internal", "127.0.0.1"]
        assert runnable_reason(settings, "npx") is None
        assert "allowlist" in str(runnable_reason(settings, "bash"))
        assert "disabled" in str(runnable_reason(settings.model_copy(update={"mcp_stdio": "off"}), "npx"))


class TestStdioEnvironment:
    @pytest.mark.parametrize(
        "name", ["PATH", "LD_PRELOAD", "ld_library_path", "NODE_OPTIONS", "PYTHONPATH", "BASH_ENV"]
    )
    def test_variables_that_steer_execution_are_for_admins_only(self, name: str) -> None:
        settings = Settings(mcp_stdio="allowlist", mcp_stdio_allowlist=["git"])
        config = {"command": "git", "env": {name: "/tmp/evil", "GIT_TOKEN": "x"}}
        with pytest.raises(Forbidden) as caught:
            ensure_may_register_stdio(settings, User(role="user"), config)
        assert caught.value.code == "mcp_env_not_allowed"
        ensure_may_register_stdio(settings, User(role="admin"), config)  # an admin may
        ensure_may_register_stdio(settings, User(role="user"), {"command": "git", "env": {"GIT_TOKEN": "x"}})


class TestSecrets:
    def test_round_trip_and_key_separation(self) -> None:
        token = secrets.encrypt("service-secret", {"env": {"A": "1"}})
        assert token is not None and '"A"' not in token
        assert secrets.decrypt("service-secret", token) == {"env": {"A": "1"}}
        with pytest.raises(Conflict, match="cannot be decrypted"):
            secrets.decrypt("another-secret", token)

    def test_split_keeps_stars_and_refuses_unknown_stars(self) -> None:
        public, values = secrets.split({"url": "u", "headers": {"A": "***", "B": "new"}}, {"headers": {"A": "old"}})
        assert public == {"url": "u", "headers": {"A": "***", "B": "***"}}
        assert values == {"headers": {"A": "old", "B": "new"}}
        with pytest.raises(KeyError):
            secrets.split({"env": {"C": "***"}}, {})


class TestOfflineDirective:
    def test_mcp_directive_becomes_a_tool_use(self) -> None:
        reply = plan_reply({"messages": [{"role": "user", "content": 'mcp docs search {"q": "x", "n": 2}'}]})
        assert reply.stop_reason == "tool_use"
        block = reply.blocks[0]
        assert block["name"] == "mcp__docs__search" and block["input"] == {"q": "x", "n": 2}

    def test_a_line_with_bad_json_is_plain_text(self) -> None:
        reply = plan_reply({"messages": [{"role": "user", "content": "mcp docs search {not json}"}]})
        assert reply.stop_reason == "end_turn"
