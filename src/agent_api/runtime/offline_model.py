"""The offline model: a small, deterministic Anthropic-Messages-compatible server on loopback.

It lets the real claude-agent-sdk and its bundled CLI run whole agent turns, tool calls included, with no
network and no key. It is not a language model: it reads directives from the last user prompt.

What it answers is decided in `offline_replies` (the directives); this module serves it over HTTP.

The HTTP side is a deliberately tiny HTTP/1.1 server on asyncio streams: the CLI (undici) and httpx only need
keep-alive, Content-Length request bodies and a chunked SSE response, and this avoids any web framework.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Self

from agent_api.runtime.offline_replies import OFFLINE_MODEL_NAME, Reply, plan_reply

OFFLINE_API_KEY = "sk-ant-offline-not-a-real-key"

_TEXT_CHUNK = 40  # stream answers in several deltas so consumers see real partial output
_TICK_S = 0.1
_MAX_BODY = 64 * 1024 * 1024


def cli_env(base_url: str) -> dict[str, str]:
    """Environment for the SDK/CLI so it talks only to the offline model at ``base_url``."""
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": OFFLINE_API_KEY,
        # An inherited token would win over the key, and cloud-provider switches would bypass the base URL.
        "ANTHROPIC_AUTH_TOKEN": "",
        "CLAUDE_CODE_USE_BEDROCK": "0",
        "CLAUDE_CODE_USE_VERTEX": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # Label the session as offline; aliases and side requests (titles) resolve to the same model.
        "ANTHROPIC_MODEL": OFFLINE_MODEL_NAME,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": OFFLINE_MODEL_NAME,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": OFFLINE_MODEL_NAME,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": OFFLINE_MODEL_NAME,
        "ANTHROPIC_SMALL_FAST_MODEL": OFFLINE_MODEL_NAME,
        # A loopback server that fails will fail again; retries only add exponential back-off.
        "CLAUDE_CODE_MAX_RETRIES": "1",
    }


# ----------------------------------------------------------------------------------------- wire formats


def _usage(reply: Reply, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": reply.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message_json(reply: Reply) -> dict[str, Any]:
    """A complete non-streaming Messages API response."""
    return {
        "id": f"msg_offline_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": OFFLINE_MODEL_NAME,
        "content": reply.blocks,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage(reply, reply.output_tokens),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _pieces(text: str, seconds: float) -> list[tuple[float, str]]:
    """(delay before, text delta) pairs; a ``sleep:`` answer starts at once, then trickles out evenly."""
    if seconds <= 0:
        return [(0.0, text[i : i + _TEXT_CHUNK]) for i in range(0, len(text), _TEXT_CHUNK)] or [(0.0, "")]
    size = -(-len(text) // max(2, min(len(text), round(seconds / _TICK_S))))
    parts = [text[i : i + size] for i in range(0, len(text), size)]
    return [(0.0, parts[0])] + [(seconds / (len(parts) - 1), part) for part in parts[1:]]


def sse_events(reply: Reply) -> list[tuple[float, bytes]]:
    """The streaming form of ``reply`` as (delay before, SSE event), event for event as the Anthropic API."""
    start = message_json(reply) | {"content": [], "stop_reason": None, "usage": _usage(reply, 1)}
    out = [(0.0, _event("message_start", {"message": start})), (0.0, _event("ping", {}))]
    for index, block in enumerate(reply.blocks):
        if block["type"] == "tool_use":
            out.append((0.0, _event("content_block_start", {"index": index, "content_block": block | {"input": {}}})))
            raw = json.dumps(block["input"])
            for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):  # split: clients must accumulate
                delta = {"type": "input_json_delta", "partial_json": part}
                out.append((0.0, _event("content_block_delta", {"index": index, "delta": delta})))
        else:
            empty = {"type": "text", "text": ""}
            out.append((0.0, _event("content_block_start", {"index": index, "content_block": empty})))
            for delay, piece in _pieces(block["text"], reply.seconds):
                delta = {"type": "text_delta", "text": piece}
                out.append((delay, _event("content_block_delta", {"index": index, "delta": delta})))
        out.append((0.0, _event("content_block_stop", {"index": index})))
    stop = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    out.append((0.0, _event("message_delta", {"delta": stop, "usage": {"output_tokens": reply.output_tokens}})))
    out.append((0.0, _event("message_stop", {})))
    return out


# ------------------------------------------------------------------------------------------------ HTTP


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    line = await reader.readline()
    if not line.strip():
        return None
    method, target, _version = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    if length > _MAX_BODY or "transfer-encoding" in headers:  # no client of ours streams a request body
        raise ValueError("unsupported request body")
    body = await reader.readexactly(length)
    return _Request(method.upper(), target.split("?", 1)[0], headers, body)


def _head(status: int, content_type: str, extra: str) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    return f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n{extra}\r\n".encode()


def _api_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


_MODEL_INFO = {
    "type": "model",
    "id": OFFLINE_MODEL_NAME,
    "display_name": "Offline echo model (deterministic, no network)",
    "created_at": "2025-01-01T00:00:00Z",
}


class OfflineModel:
    """The offline model server. ``await start()`` in a loop, or ``start_in_thread()`` for sync callers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.request_count = 0  # POST /v1/messages served
        self.last_request: dict[str, Any] | None = None  # body of the latest /v1/messages, for debugging
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("offline model is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Python 3.11's Server.close() leaves accepted keep-alive connections open; end them ourselves.
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- background thread, for sync callers (test modules, benchmarks)

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Serve from a daemon thread with its own event loop; returns ``base_url`` once accepting."""
        if self._thread is not None:
            return self.base_url
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # handed to the starting thread, which raises it
                failure.append(exc)
            ready.set()
            if not failure:
                loop.run_forever()  # until stop_thread() stops it
                loop.run_until_complete(self.stop())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="offline-model", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            self._thread, self._loop = None, None
            raise RuntimeError("offline model failed to start") from (failure[0] if failure else None)
        return self.base_url

    def stop_thread(self, timeout: float = 10.0) -> None:
        thread, loop = self._thread, self._loop
        self._thread = self._loop = None
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> Self:
        self.start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()

    # -- connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while (request := await _read_request(reader)) is not None:
                if not await self._respond(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, UnicodeDecodeError):
            pass  # a client that hangs up or speaks garbage only loses its own connection
        except asyncio.CancelledError:
            # `stop` ends the connections still open (a stream an interrupted agent left behind). Re-raised, the
            # cancel would reach asyncio's own done-callback, which logs it as an error on Python 3.11.
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _respond(self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        keep_alive = request.headers.get("connection", "").lower() != "close"
        answer = self._route(request.method, request.path.rstrip("/") or "/", request.body)
        if isinstance(answer, Reply):
            return await self._stream(writer, reader, answer) and keep_alive
        status, payload = answer
        data = b"" if request.method == "HEAD" else json.dumps(payload).encode()
        extra = f"content-length: {len(data)}\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n"
        writer.write(_head(status, "application/json", extra) + data)
        await writer.drain()
        return keep_alive

    def _route(self, method: str, path: str, raw: bytes) -> Reply | tuple[int, Any]:
        """A Reply to stream, or (status, JSON payload)."""
        if method in ("GET", "HEAD"):
            if path == "/v1/models":
                return 200, {"data": [_MODEL_INFO], "has_more": False, "first_id": OFFLINE_MODEL_NAME}
            if path.startswith("/v1/models/"):
                return 200, _MODEL_INFO
            # Anything else is a reachability probe (the CLI sends HEAD /api/hello): answer it as healthy.
            return 200, {"status": "ok", "model": OFFLINE_MODEL_NAME, "offline": True}
        if method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return 404, _api_error("not_found_error", f"{method} {path} is not served by the offline model")
        try:
            body = json.loads(raw or b"{}")
            reply = plan_reply(body)  # raises on JSON that is not a Messages request
        except (ValueError, TypeError, AttributeError) as exc:
            return 400, _api_error("invalid_request_error", f"not a Messages API request: {exc}")
        if path == "/v1/messages/count_tokens":
            return 200, {"input_tokens": reply.input_tokens}
        self.request_count += 1
        self.last_request = body
        return reply if body.get("stream") else (200, message_json(reply))

    async def _stream(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader, reply: Reply) -> bool:
        """Send ``reply`` as chunked SSE; False if the client went away (e.g. the CLI was interrupted)."""
        extra = "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
        writer.write(_head(200, "text/event-stream", extra))
        for delay, event in sse_events(reply):
            # Wait in short ticks so a client that hangs up mid-``sleep:`` frees its connection at once.
            ticks = math.ceil(delay / _TICK_S)
            for _ in range(ticks):
                if reader.at_eof():
                    break
                await asyncio.sleep(delay / ticks)
            if reader.at_eof() or writer.is_closing():
                return False
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
