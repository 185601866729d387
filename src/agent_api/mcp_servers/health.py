"""Health checks with the official `mcp` client: connect, initialize, list tools (and resources and prompts).

The stdio transport is our own small one rather than the SDK's `stdio_client`: it starts the server in its own
process group and kills the whole group when the check ends, however it ends, so a server that hangs, spews
output or forks children leaves nothing behind. Error texts are our own summaries, never a response body.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import mcp.types as mcp_types
from anyio.abc import Process
from mcp import ClientSession, McpError
from mcp.client.sse import sse_client
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from agent_api.runtime import pinned_http, ssrf

MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_NOISE_LINES = 1_000  # non-protocol stdout lines tolerated before the server counts as broken
GRACE_S = 0.5  # after stdin closes, how long a server gets to exit on its own


class ProtocolViolation(Exception):
    pass


@dataclass
class HealthResult:
    status: str  # healthy|unhealthy
    latency_ms: float
    server_name: str | None = None
    server_version: str | None = None
    protocol_version: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] | None = None
    prompts: list[dict[str, Any]] | None = None
    error: str | None = None
    pid: int | None = None  # the stdio server's process id, for callers that verify it is gone


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def _stdio(config: dict[str, Any], result: HealthResult) -> AsyncIterator[tuple[Any, Any]]:
    env = {**get_default_environment(), **config.get("env", {})}
    process: Process = await anyio.open_process(
        [config["command"], *config.get("args", [])],  # an argv list: never a shell
        env=env,
        cwd=config.get("cwd"),
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so children die with it
    )
    result.pid = process.pid
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def pump_out() -> None:
        assert process.stdout is not None
        buffer, noise = b"", 0
        async with read_writer:
            async for chunk in process.stdout:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        message = mcp_types.JSONRPCMessage.model_validate_json(line)
                    except ValueError:
                        noise += 1
                        if noise > MAX_NOISE_LINES:
                            raise ProtocolViolation("the server writes non-protocol output to stdout") from None
                        continue
                    await read_writer.send(SessionMessage(message))
                if len(buffer) > MAX_LINE_BYTES:
                    raise ProtocolViolation("the server wrote an over-long line to stdout")

    async def pump_in() -> None:
        assert process.stdin is not None
        async with write_reader:
            async for message in write_reader:
                data = message.message.model_dump_json(by_alias=True, exclude_none=True)
                await process.stdin.send((data + "\n").encode())

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_out)
            tg.start_soon(pump_in)
            try:
                yield read_stream, write_stream
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                if process.stdin is not None:
                    await process.stdin.aclose()
            with anyio.move_on_after(GRACE_S):
                await process.wait()
            _kill_group(process.pid)
            await process.aclose()  # reaps it and closes its pipes and transport
            for stream in (read_stream, write_stream):
                await stream.aclose()


def _http_client(headers: dict[str, str], timeout: float, transport: pinned_http.PinnedTransport) -> httpx.AsyncClient:
    # max_redirects=0: the MCP transports follow no redirect at all, so none can lead past the SSRF check; the
    # transport connects only to the address that check passed (DNS rebinding) and never through a proxy.
    return httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        max_redirects=0,
        trust_env=False,
        transport=transport,
    )


@contextlib.asynccontextmanager
async def _remote(
    server_type: str, config: dict[str, Any], limit_s: float, transport: pinned_http.PinnedTransport
) -> AsyncIterator[tuple[Any, Any]]:
    headers = dict(config.get("headers", {}))
    if server_type == "sse":

        def factory(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> httpx.AsyncClient:
            return _http_client(headers or {}, limit_s, transport)

        async with sse_client(config["url"], headers=headers, timeout=limit_s, httpx_client_factory=factory) as (r, w):
            yield r, w
        return
    async with (
        _http_client(headers, limit_s, transport) as client,
        streamable_http_client(config["url"], http_client=client) as (r, w, _),
    ):
        yield r, w


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe_error(exc: BaseException, limit_s: float) -> str:
    """A short, safe description: our own words plus status codes and OS errors, never a body from the server."""
    exc = _leaf(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {limit_s:g} s"
    if isinstance(exc, ssrf.UnsafeUrl | ProtocolViolation):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "cannot start the server: executable not found"
    if isinstance(exc, PermissionError):
        return "cannot start the server: permission denied"
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if 300 <= status < 400:
            return f"the server answered with a redirect (HTTP {status}), which is refused"
        return f"the server answered HTTP {status}"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {limit_s:g} s"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect to the server"
    if isinstance(exc, McpError):
        if "closed" in exc.error.message.lower():
            return "the server closed the connection before answering"
        return f"MCP error {exc.error.code}: {exc.error.message[:300]}"
    if isinstance(exc, anyio.EndOfStream | anyio.ClosedResourceError | anyio.BrokenResourceError):
        return "the server closed the connection before answering"
    return f"health check failed ({type(exc).__name__})"


def _items(values: list[Any], *keys: str) -> list[dict[str, Any]]:
    return [{k: getattr(v, k, None) for k in keys} for v in values]


async def check(server_type: str, config: dict[str, Any], *, limit_s: float, allowed_hosts: list[str]) -> HealthResult:
    """Connect with the real MCP client and list what the server offers, all within `limit_s` seconds."""
    result = HealthResult(status="unhealthy", latency_ms=0.0)
    started = time.perf_counter()
    try:
        with anyio.fail_after(limit_s):
            if server_type == "stdio":
                transport = _stdio(config, result)
            else:
                pinned = await pinned_http.transport_for(config["url"], allowed_hosts)
                transport = _remote(server_type, config, limit_s, pinned)
            async with transport as (read, write), ClientSession(read, write) as session:
                init = await session.initialize()
                result.server_name, result.server_version = init.serverInfo.name, init.serverInfo.version
                result.protocol_version = str(init.protocolVersion)
                result.tools = _items((await session.list_tools()).tools, "name", "description")
                if init.capabilities.resources is not None:
                    listed = (await session.list_resources()).resources
                    result.resources = [{"uri": str(r.uri), "name": r.name} for r in listed]
                if init.capabilities.prompts is not None:
                    result.prompts = _items((await session.list_prompts()).prompts, "name", "description")
        result.status = "healthy"
    except Exception as exc:  # every failure is an answer here, never an error of the request
        result.error = describe_error(exc, limit_s)
    result.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return result
