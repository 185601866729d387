"""Health checks against real MCP servers written with the `mcp` SDK: stdio, streamable HTTP, and broken ones."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent_api.app import create_app
from tests.conftest import Users, app_state, assert_error_shape, make_client, make_settings, wait_until
from tests.mcp.conftest import ECHO_SERVER, MISBEHAVING, McpApi, process_gone, stdio_config

TIMEOUT_S = 3.0
EXPECTED_TOOLS = {"echo", "add"}


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    # Loopback is allowlisted here, so the streamable-HTTP test server on 127.0.0.1 passes the SSRF check.
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        database_url,
        mcp_allowed_hosts=["127.0.0.1"],
        mcp_health_timeout_s=TIMEOUT_S,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(ECHO_SERVER), "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the HTTP MCP server did not start"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def api(app: object) -> AsyncIterator[McpApi]:
    async with make_client(app) as client:
        yield McpApi(client, await Users(app, client).create(admin=True))


async def check(api: McpApi, server_id: str) -> dict[str, object]:
    r = await api.post(f"/{server_id}/health-check")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def assert_gone(*pids: int) -> None:
    async def all_gone() -> bool:
        return all(process_gone(p) for p in pids)

    await wait_until(all_gone, timeout=5)


class TestHealthy:
    async def test_stdio_server_lists_both_tools_and_is_stored(self, api: McpApi) -> None:
        sid = (await api.create(name="echo", server_type="stdio", config=stdio_config()))["id"]
        result = await check(api, sid)
        assert result["status"] == "healthy", result
        assert {t["name"] for t in result["tools"]} == EXPECTED_TOOLS  # type: ignore[attr-defined]
        assert result["server_name"] == "echo-test-server" and result["protocol_version"]
        assert result["error"] is None and 0 < result["latency_ms"] < TIMEOUT_S * 1000  # type: ignore[operator]
        assert result["resources"] == [] and result["prompts"] == []  # FastMCP offers both, empty

        stored = (await api.get(f"/{sid}")).json()
        assert stored["health_status"] == "healthy" and stored["last_health_check_at"]
        assert {t["name"] for t in stored["tools"]} == EXPECTED_TOOLS
        assert stored["last_health"]["server_name"] == "echo-test-server"

    async def test_streamable_http_server_on_allowlisted_loopback(self, api: McpApi, http_server: str) -> None:
        sid = (await api.create(name="echo-http", server_type="http", config={"url": http_server}))["id"]
        result = await check(api, sid)
        assert result["status"] == "healthy", result
        assert {t["name"] for t in result["tools"]} == EXPECTED_TOOLS  # type: ignore[attr-defined]


class TestUnhealthy:
    async def test_a_command_that_exits_at_once(self, api: McpApi) -> None:
        config = {"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]}
        sid = (await api.create(name="quitter", server_type="stdio", config=config))["id"]
        result = await check(api, sid)
        assert (
            result["status"] == "unhealthy" and result["error"] == "the server closed the connection before answering"
        )
        assert (await api.get(f"/{sid}")).json()["health_status"] == "unhealthy"

    async def test_a_missing_executable(self, api: McpApi) -> None:
        config = {"command": "/nonexistent/mcp-server"}
        sid = (await api.create(name="missing", server_type="stdio", config=config))["id"]
        result = await check(api, sid)
        assert result["status"] == "unhealthy" and "executable not found" in str(result["error"])

    @pytest.mark.parametrize("mode", ["hang", "spew"])
    async def test_hanging_or_spewing_server_is_killed_with_its_children(
        self, api: McpApi, tmp_path: Path, mode: str
    ) -> None:
        pid_file = tmp_path / "pids"
        config = stdio_config(mode, str(pid_file), script=MISBEHAVING)
        sid = (await api.create(name=f"bad-{mode}", server_type="stdio", config=config))["id"]
        started = time.monotonic()
        result = await check(api, sid)
        elapsed = time.monotonic() - started
        assert result["status"] == "unhealthy"
        assert elapsed < TIMEOUT_S + 2.5, elapsed  # the timeout plus the kill, not the server's hour of sleep
        if mode == "hang":
            assert result["error"] == f"no answer within {TIMEOUT_S:g} s"
        else:
            assert result["error"] == "the server writes non-protocol output to stdout"
        server_pid, child_pid = (int(p) for p in pid_file.read_text().split())
        await assert_gone(server_pid, child_pid)

    async def test_remote_url_refused_at_check_time_names_no_body(self, api: McpApi, http_server: str) -> None:
        # Allowlisted at registration by its IP, then checked under a name that is not on the allowlist.
        sid = (await api.create(name="renamed", server_type="http", config={"url": http_server}))["id"]
        state = app_state(api.client._transport.app)  # type: ignore[attr-defined]
        state.settings.mcp_allowed_hosts = []
        try:
            result = await check(api, sid)
        finally:
            state.settings.mcp_allowed_hosts = ["127.0.0.1"]
        assert result["status"] == "unhealthy" and "loopback" in str(result["error"])


class TestAccess:
    async def test_stdio_checks_stop_when_the_policy_turns_off(self, api: McpApi) -> None:
        sid = (await api.create(name="policy", server_type="stdio", config=stdio_config()))["id"]
        state = app_state(api.client._transport.app)  # type: ignore[attr-defined]
        state.settings.mcp_stdio = "off"
        try:
            assert_error_shape(await api.post(f"/{sid}/health-check"), 403, "mcp_stdio_not_runnable")
        finally:
            state.settings.mcp_stdio = "admin"

    async def test_another_user_gets_404(self, app: object, api: McpApi) -> None:
        sid = (await api.create(name="private", server_type="stdio", config=stdio_config()))["id"]
        async with make_client(app) as client:
            other = McpApi(client, await Users(app, client).create())
            assert_error_shape(await other.post(f"/{sid}/health-check"), 404)
