"""A real HTTP receiver on loopback for webhook tests: records each request and answers as the test scripts it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """Answers with the next scripted reply: an HTTP status (int), ("redirect", location) or "hang" (never answers);
    once the script is spent, 200. `connections` counts accepted TCP connections, requests or not."""

    host: str = "127.0.0.1"
    script: list[Any] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _hung: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for writer in self._hung:
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append(Received(request_line.split(" ")[1], headers, body))
        reply = self.script.pop(0) if self.script else 200
        if reply == "hang":
            self._hung.append(writer)
            return
        extra = ""
        status = reply
        if isinstance(reply, tuple):
            status, extra = 302, f"location: {reply[1]}\r\n"
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\n{extra}connection: close\r\n\r\nok".encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
