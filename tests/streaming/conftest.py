"""A real uvicorn server around the module's app, so tests speak real WebSocket to it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets

from agent_api.cli import UVICORN_OPTIONS
from tests.conftest import wait_until

# Served exactly as `agent-api serve` serves it, minus the pings these tests do not need.
SERVER_OPTIONS = {**UVICORN_OPTIONS, "ws_ping_interval": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def server_url(app: object) -> AsyncIterator[str]:
    port = free_port()
    # The app's lifespan is already running (the `app` fixture); uvicorn only serves it.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="info", **SERVER_OPTIONS)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await wait_until(started, timeout=15)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 15)


class Stream:
    """A real WebSocket client on a session stream, with helpers to read frames."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def recv(self, timeout: float = 30.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame  # type: ignore[no-any-return]

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def until(self, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            assert remaining > 0, f"no matching frame within {timeout}s; got {[f['type'] for f in self.frames]}"
            frame = await self.recv(remaining)
            if predicate(frame):
                return frame


async def connect(server_url: str, session_id: str, **params: Any) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return await websockets.connect(f"ws://{server_url}/api/v1/sessions/{session_id}/stream?{query}", open_timeout=15)


async def close_code(server_url: str, session_id: str, headers: dict[str, str] | None = None, **params: Any) -> int:
    """The close code the server answers a connection attempt with."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    url = f"ws://{server_url}/api/v1/sessions/{session_id}/stream?{query}"
    async with websockets.connect(url, additional_headers=headers or {}, open_timeout=15) as ws:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 15)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None
            return int(closed.rcvd.code)


async def open_stalled(server_url: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake on a raw socket that then never reads: a client that stopped reading, for real."""
    import base64
    import os

    host, port = server_url.split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=2**16)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {server_url}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in status, status
    return reader, writer
