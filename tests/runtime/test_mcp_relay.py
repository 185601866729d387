"""The loopback MCP relay: the agent CLI is given a relay address for each HTTP/SSE MCP server, and the relay (not
the CLI) connects to the server, adds its configured headers and follows no redirect.

Real MCP servers (the `mcp` SDK's FastMCP, over streamable HTTP and the legacy SSE transport) are driven through
the relay by the `mcp` SDK's own clients and, in the slow tests, by the real agent CLI. An in-process upstream
records what reaches it and serves crafted event streams; counting loopback listeners prove what is never reached.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent_api.app import create_app
from agent_api.mcp_servers import service as mcp_service
from agent_api.runtime import mcp_relay, ssrf
from agent_api.runtime.mcp_relay import McpRelay
from tests.conftest import SessionsApi, UserAccount, app_state, make_settings, wait_until
from tests.mcp.conftest import McpApi
from tests.security.test_ssrf import LoopbackService

LOOPBACK = ["127.0.0.1"]  # the allowlist these tests register with: every server here listens on loopback
SECRET = "relay-header-SECRET-5c2e9a"

# A real MCP server with a tool that answers with a header of the request that carried the call.
SERVER_CODE = """
import sys
from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("relay-test")

@server.tool()
def echo(text: str) -> str:
    return f"echo: {text}"

@server.tool()
def header(name: str, ctx: Context) -> str:
    request = ctx.request_context.request
    return f"header {name}={request.headers.get(name, '<absent>') if request is not None else '<no request>'}"

server.settings.host, server.settings.port = "127.0.0.1", int(sys.argv[1])
server.run(sys.argv[2])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(transport: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE, str(port), transport], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, f"the {transport} MCP server did not start"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def mcp_urls() -> Iterator[dict[str, str]]:
    """{"http": URL, "sse": URL} of real MCP servers on loopback."""
    started = {"http": _start_server("streamable-http"), "sse": _start_server("sse")}
    try:
        yield {
            kind: f"http://127.0.0.1:{port}/{'mcp' if kind == 'http' else 'sse'}" for kind, (_, port) in started.items()
        }
    finally:
        for proc, _ in started.values():
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="module")
async def relay() -> AsyncIterator[McpRelay]:
    started = McpRelay()
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


class Upstream:
    """An in-process HTTP server: `/echo` answers with what it received; `/sse` serves an `endpoint` event with
    the data `?endpoint=` names (CRLF line ends, a comment), then a `message` event; `/gated` sends one event,
    then a second only once `gate` is set."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.port = 0

        async def echo(request: Request) -> Response:
            record = {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": (await request.body()).decode(),
            }
            self.seen.append(record)
            return JSONResponse(record, status_code=201, headers={"mcp-session-id": "session-from-upstream"})

        async def sse(request: Request) -> Response:
            endpoint = request.query_params["endpoint"]

            async def events() -> AsyncIterator[bytes]:
                yield b": hello\r\n\r\n"
                yield f"event: endpoint\r\ndata: {endpoint}\r\n\r\n".encode()
                yield b"event: message\ndata: AFTER-ENDPOINT\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        async def gated(_request: Request) -> Response:
            async def events() -> AsyncIterator[bytes]:
                yield b"event: message\ndata: one\n\n"
                await self.gate.wait()
                yield b"event: message\ndata: two\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        methods = ["GET", "POST", "DELETE", "PUT"]
        self.app = Starlette(
            routes=[
                Route("/sse", sse),
                Route("/deep/sse", sse),
                Route("/gated", gated),
                Route("/{path:path}", echo, methods=methods),
            ]
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    recorder = Upstream()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    recorder.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(recorder.app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_until(lambda: _true(server.started), timeout=10)
    try:
        yield recorder
    finally:
        server.should_exit = True
        await task


async def _true(value: bool) -> bool | None:
    return value or None


def token_of(relay_url: str) -> str:
    return urlsplit(relay_url).path.split("/")[2]


# --- relaying to real MCP servers ------------------------------------------------------------------------------


class TestRealMcpServers:
    @pytest.mark.parametrize("kind", ["http", "sse"])
    async def test_the_sdk_client_works_through_the_relay_with_the_configured_header(
        self, relay: McpRelay, mcp_urls: dict[str, str], kind: str
    ) -> None:
        """Initialize, list tools and call them, over streamable HTTP (answers as SSE) and over the legacy SSE
        transport (a GET stream that stays open while the calls go to its rewritten endpoint)."""
        url = await relay.register(mcp_urls[kind], {"X-Relay-Secret": SECRET}, LOOPBACK)
        assert url.startswith(f"{relay.base_url}/r/") and urlsplit(url).path.endswith(urlsplit(mcp_urls[kind]).path)
        async with asyncio.timeout(30):
            if kind == "http":
                async with (
                    httpx.AsyncClient(trust_env=False) as http,
                    streamable_http_client(url, http_client=http) as (read, write, _),
                    ClientSession(read, write) as session,
                ):
                    echoed, header = await _calls(session)
            else:
                async with sse_client(url) as (read, write), ClientSession(read, write) as session:
                    echoed, header = await _calls(session)
        assert echoed == "echo: hi"
        assert header == f"header x-relay-secret={SECRET}"  # added by the relay: the client never had it


async def _calls(session: ClientSession) -> tuple[str, str]:
    await session.initialize()
    assert {t.name for t in (await session.list_tools()).tools} == {"echo", "header"}
    texts = []
    for name, arguments in (("echo", {"text": "hi"}), ("header", {"name": "x-relay-secret"})):
        result = await session.call_tool(name, arguments)
        assert not result.isError, result
        texts.append(result.content[0].text)  # type: ignore[union-attr]
    return texts[0], texts[1]


# --- what is forwarded -----------------------------------------------------------------------------------------


class TestForwarding:
    async def test_method_path_query_body_and_mcp_headers_go_through_and_nothing_else(
        self, relay: McpRelay, upstream: Upstream
    ) -> None:
        url = await relay.register(
            upstream.url("/base/mcp"),
            {"X-Api-Key": SECRET, "Host": "internal.example", "Authorization": "Bearer B"},
            LOOPBACK,
        )
        sent = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-session-id": "abc",
            "mcp-protocol-version": "2025-06-18",
            "last-event-id": "7",
            # Not MCP's business: never forwarded, and a key of the CLI's own never replaces the configured one.
            "x-api-key": "FROM-THE-CLI",
            "authorization": "Bearer FROM-THE-CLI",
            "cookie": "c=1",
            "x-forwarded-for": "10.0.0.1",
        }
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.post(f"{url}/deeper?a=1&b=%2F", content=b'{"jsonrpc": "2.0"}', headers=sent)
        assert r.status_code == 201, r.text
        assert r.headers["mcp-session-id"] == "session-from-upstream"
        seen = r.json()
        assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
            "POST",
            "/base/mcp/deeper",
            "a=1&b=%2F",
            '{"jsonrpc": "2.0"}',
        )
        headers = seen["headers"]
        names = [k for k, _ in headers]
        assert len(names) == len(set(names)), headers
        got = dict(headers)
        for name in ("content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id"):
            assert got[name] == sent[name]
        assert got["x-api-key"] == SECRET and got["authorization"] == "Bearer B"
        assert got["host"] == f"127.0.0.1:{upstream.port}"  # a configured Host is not taken
        assert "cookie" not in got and "x-forwarded-for" not in got

    async def test_answers_stream_as_they_come(self, relay: McpRelay, upstream: Upstream) -> None:
        """The first event reaches the client while the upstream still holds back the second."""
        url = await relay.register(upstream.url("/gated"), {}, LOOPBACK)
        upstream.gate.clear()
        async with httpx.AsyncClient(trust_env=False) as http, http.stream("GET", url) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            received = ""
            chunks = r.aiter_text()
            async with asyncio.timeout(10):
                while "data: one" not in received:
                    received += await anext(chunks)
            assert "two" not in received
            upstream.gate.set()
            async with asyncio.timeout(10):
                async for chunk in chunks:
                    received += chunk
        assert received == "event: message\ndata: one\n\nevent: message\ndata: two\n\n"


class TestSseEndpointRewrite:
    @pytest.mark.parametrize(
        ("stream_path", "endpoint", "expected"),
        [
            ("/sse", "/messages/?session_id=abc", "/messages/?session_id=abc"),
            ("/deep/sse", "messages/?session_id=abc", "/deep/messages/?session_id=abc"),
            ("/sse", "http://127.0.0.1:{port}/messages/?session_id=abc", "/messages/?session_id=abc"),
        ],
        ids=["absolute-path", "relative-path", "same-origin-url"],
    )
    async def test_the_endpoint_is_on_the_relay(
        self, relay: McpRelay, upstream: Upstream, stream_path: str, endpoint: str, expected: str
    ) -> None:
        url = await relay.register(upstream.url(stream_path), {}, LOOPBACK)
        body = await _read(url, endpoint.format(port=upstream.port))
        token = token_of(url)
        assert body == (
            f": hello\n\nevent: endpoint\ndata: /r/{token}{expected}\n\nevent: message\ndata: AFTER-ENDPOINT\n\n"
        )

    @pytest.mark.parametrize(
        "endpoint",
        ["http://127.0.0.1:{other}/messages/?session_id=abc", "//evil.example/messages/", "https://127.0.0.1:{port}/m"],
        ids=["other-port", "other-host", "other-scheme"],
    )
    async def test_an_endpoint_on_another_origin_is_refused_and_the_stream_ends(
        self, relay: McpRelay, upstream: Upstream, endpoint: str
    ) -> None:
        url = await relay.register(upstream.url("/sse"), {}, LOOPBACK)
        body = await _read(url, endpoint.format(port=upstream.port, other=upstream.port + 1))
        assert body.startswith(": hello\n\nevent: error\n"), body
        assert "endpoint" not in body.split("event: error", 1)[0] and "AFTER-ENDPOINT" not in body
        assert "messages" not in body and "evil" not in body

    async def test_events_split_anywhere_are_put_back_together(self) -> None:
        stream = "event: endpoint\r\ndata: /m?s=é\r\rid: 1\ndata: x\r\ndata: y\n\n: c\n\ndata: tail".encode()

        async def bytewise() -> AsyncIterator[bytes]:
            for i in range(len(stream)):
                yield stream[i : i + 1]

        out = b"".join([c async for c in mcp_relay._sse(bytewise(), lambda data: f"/r/T{data}")])
        assert out.decode() == "event: endpoint\ndata: /r/T/m?s=é\n\nid: 1\ndata: x\ndata: y\n\n: c\n\ndata: tail"

    async def test_a_line_that_never_ends_is_cut_off(self) -> None:
        sent = 0

        async def endless() -> AsyncIterator[bytes]:
            nonlocal sent
            while sent < 64 * 1024 * 1024:
                sent += 65536
                yield b"x" * 65536

        out = b"".join([c async for c in mcp_relay._sse(endless(), lambda data: data)])
        assert out.endswith(b'too large to relay"}\n\n') and len(out) < 1024
        assert sent <= 2 * mcp_relay.MAX_SSE_LINE_CHARS  # it stopped reading soon after the limit

    async def test_an_event_of_endless_lines_is_cut_off(self) -> None:
        async def lines() -> AsyncIterator[bytes]:
            for _ in range(10_000):
                yield b"data: " + b"y" * 1000 + b"\n"

        out = b"".join([c async for c in mcp_relay._sse(lines(), lambda data: data)])
        assert out.endswith(b'too large to relay"}\n\n')

    async def test_a_byte_order_mark_does_not_hide_an_endpoint(self) -> None:
        async def stream() -> AsyncIterator[bytes]:
            yield "\ufeffevent: endpoint\ndata: https://evil.example/m\n\n".encode()

        out = b"".join([c async for c in mcp_relay._sse(stream(), lambda data: None)])
        assert b"evil" not in out and b"event: error" in out


async def _read(url: str, endpoint: str) -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        r = await http.get(url, params={"endpoint": endpoint}, timeout=10)
    assert r.status_code == 200
    return r.text


# --- what is never reached -------------------------------------------------------------------------------------


@pytest.fixture
def target() -> Iterator[LoopbackService]:
    service = LoopbackService()
    yield service
    service.close()


class TestRefusals:
    @pytest.mark.parametrize("method", ["GET", "POST"])
    async def test_a_redirect_is_a_502_and_is_not_followed(
        self, relay: McpRelay, target: LoopbackService, method: str
    ) -> None:
        redirector = LoopbackService(redirect_to=f"{target.url}mcp")
        try:
            url = await relay.register(f"{redirector.url}mcp", {"X-Api-Key": SECRET}, LOOPBACK)
            async with httpx.AsyncClient(trust_env=False) as http:
                r = await http.request(method, url, json={"jsonrpc": "2.0"} if method == "POST" else None)
        finally:
            redirector.close()
        assert r.status_code == 502 and "redirect (302)" in r.json()["error"], r.text
        assert "location" not in r.headers and redirector.marker not in r.text
        assert [(m, p, h.get("x-api-key")) for m, p, h in redirector.requests] == [(method, "/mcp", SECRET)]
        assert target.connections == 0 and target.requests == []

    async def test_an_unknown_token_is_404_and_reaches_nothing(self, relay: McpRelay, target: LoopbackService) -> None:
        url = await relay.register(f"{target.url}mcp", {}, LOOPBACK)
        token = token_of(url)
        forged = [
            url.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B")),
            f"{relay.base_url}/r//mcp",
            f"{relay.base_url}/r/",
            f"{relay.base_url}/mcp",
            f"{relay.base_url}/",
            f"{relay.base_url}/r/{token}x/mcp",
        ]
        async with httpx.AsyncClient(trust_env=False) as http:
            for forged_url in forged:
                for method in ("GET", "POST"):
                    r = await http.request(method, forged_url)
                    assert r.status_code == 404, (forged_url, r.text)
            assert target.connections == 0 and target.requests == []
            # The real token does reach it: the control.
            assert (await http.get(url)).status_code == 200
            assert len(target.requests) == 1

    async def test_a_released_token_is_404(self, relay: McpRelay, target: LoopbackService) -> None:
        url = await relay.register(f"{target.url}mcp", {}, LOOPBACK)
        configs = {"a": {"type": "http", "url": url}}
        relay.hold(configs)
        relay.hold(configs)  # two processes started with the same configs
        async with httpx.AsyncClient(trust_env=False) as http:
            await relay.release(configs)
            assert (await http.get(url)).status_code == 200  # the other still holds it
            await relay.release(configs)
            assert (await http.get(url)).status_code == 404
        assert len(target.requests) == 1

    async def test_a_token_no_agent_takes_up_expires(
        self, relay: McpRelay, target: LoopbackService, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        unheld = await relay.register(f"{target.url}mcp", {}, LOOPBACK)
        held = await relay.register(f"{target.url}mcp", {}, LOOPBACK)
        relay.hold({"a": {"url": held}})
        monkeypatch.setattr(mcp_relay, "UNHELD_TTL_S", -1.0)
        await relay.register(f"{target.url}mcp", {}, LOOPBACK)  # registrations sweep the stale ones
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(unheld)).status_code == 404
            assert (await http.get(held)).status_code == 200
        await relay.release({"a": {"url": held}})

    @pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "2130706433", "[::1]"])
    async def test_an_internal_url_is_not_registered(self, relay: McpRelay, host: str) -> None:
        with pytest.raises(ssrf.UnsafeUrl):
            await relay.register(f"http://{host}:9/mcp", {"X-Api-Key": SECRET}, [])


# --- the agent's configuration, and the real CLI ---------------------------------------------------------------


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    settings = make_settings(tmp_path_factory.mktemp("data"), database_url, mcp_allowed_hosts=LOOPBACK)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


class TestAgentConfig:
    async def test_the_cli_gets_a_relay_url_and_no_headers(self, app: object, mcp_urls: dict[str, str]) -> None:
        state = app_state(app)
        relay = state.mcp_relay
        assert relay is not None
        stdio = {"command": sys.executable, "args": ["x.py"], "env": {"K": "V"}}
        attached = [
            mcp_service.AttachedServer(
                uuid.uuid4(), "h", "http", {"url": mcp_urls["http"], "headers": {"X-K": SECRET}}
            ),
            mcp_service.AttachedServer(uuid.uuid4(), "s", "sse", {"url": mcp_urls["sse"], "headers": {"X-K": SECRET}}),
            mcp_service.AttachedServer(uuid.uuid4(), "io", "stdio", stdio),
            mcp_service.AttachedServer(uuid.uuid4(), "bad", "http", {"url": "http://10.0.0.1/mcp"}),
        ]
        configs = await mcp_service.sdk_configs(state, attached)
        assert configs["io"] == {"type": "stdio", **stdio}
        assert set(configs) == {"h", "s", "io"}
        for name, kind in (("h", "http"), ("s", "sse")):
            assert set(configs[name]) == {"type", "url"} and configs[name]["type"] == kind
            assert configs[name]["url"].startswith(f"{relay.base_url}/r/")
        assert SECRET not in json.dumps(configs)


def _proc_texts() -> Iterator[tuple[str, bytes]]:
    for proc in Path("/proc").glob("[0-9]*"):
        for part in ("cmdline", "environ"):
            try:
                yield f"{proc.name}/{part}", (proc / part).read_bytes()
            except OSError:
                continue


@pytest.mark.slow
class TestWithTheCli:
    async def test_the_cli_reaches_both_transports_through_the_relay_and_never_holds_the_header(
        self,
        app: object,
        client: httpx.AsyncClient,
        owner: UserAccount,
        sessions: SessionsApi,
        mcp_urls: dict[str, str],
    ) -> None:
        state = app_state(app)
        relay, pool = state.mcp_relay, state.require_agents()
        assert relay is not None
        api = McpApi(client, owner)
        names = {kind: f"{kind}{uuid.uuid4().hex[:6]}" for kind in ("http", "sse")}
        servers = [
            await api.create(
                name=names[kind],
                server_type=kind,
                config={"url": mcp_urls[kind], "headers": {"X-Relay-Secret": SECRET}},
            )
            for kind in ("http", "sse")
        ]
        s = await sessions.create(permission_mode="bypassPermissions", mcp_server_ids=[x["id"] for x in servers])
        prompt = "\n".join(f'mcp {names[k]} header {{"name": "x-relay-secret"}}' for k in ("http", "sse"))
        r = await sessions.query(s["id"], prompt)
        assert r.status_code == 200, r.text
        assert (await sessions.get(s["id"]))["mcp_status"] == [
            {"name": names[k], "status": "connected"} for k in ("http", "sse")
        ]
        calls = await sessions.items(s["id"], "tool-calls")
        assert [(c["name"], c["status"]) for c in calls] == [
            (f"mcp__{names[k]}__header", "completed") for k in ("http", "sse")
        ]
        assert all(f"header x-relay-secret={SECRET}" in str(c["output"]) for c in calls), calls

        # What the CLI was started with: relay addresses, no headers; its environment and command line are clean.
        agent = pool._agents[uuid.UUID(s["id"])]
        urls = [config["url"] for config in agent.spec.mcp_servers.values()]
        assert len(urls) == 2 and all(u.startswith(f"{relay.base_url}/r/") for u in urls)
        assert all("headers" not in config for config in agent.spec.mcp_servers.values())
        assert SECRET not in json.dumps(agent.spec.mcp_servers) + json.dumps(agent.config.env)
        assert [name for name, text in _proc_texts() if SECRET.encode() in text] == []

        # The agent's end gives its tokens back: the addresses it had reach nothing any more.
        await pool.close(uuid.UUID(s["id"]))
        async with httpx.AsyncClient(trust_env=False) as http:
            for url in urls:
                assert (await http.post(url, json={})).status_code == 404
