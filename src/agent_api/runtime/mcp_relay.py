"""A loopback relay in front of the HTTP and SSE MCP servers attached to sessions: the agent CLI never connects to
one itself.

`register` checks a server's URL (`ssrf.pinned_target`) and answers `http://127.0.0.1:PORT/r/<token>/<path>`, the
only address the CLI is given. The relay forwards `/r/<token>/<rest>` to `<the server's origin>/<rest>` (method,
query, body streamed, and the MCP request headers: content type, accept, session id, protocol version, last event
id) through a `PinnedTransport`, so the connection goes to the address that was checked. It adds the server's
configured headers itself, so their secrets never enter the agent's configuration. It follows no redirect: a 3xx
from the server is a 502 to the CLI. Answers stream back as they come, the streamable-HTTP transport's JSON and SSE
answers as much as the legacy SSE transport's long-lived GET stream, whose `endpoint` event (a path on the server,
or an absolute URL on its origin) is rewritten to the relay's `/r/<token>/...`; an endpoint on another origin is
dropped and the stream ends with an error event.

Tokens: each `register` makes a random one. The agent processes started with a configuration hold its tokens
(`hold`) and give them back when they end (`release`): a token is dropped when the last agent holding it ends. A
token no agent has taken up within `UNHELD_TTL_S` of its registration (the configuration of a turn whose agent was
already running, for instance) is dropped at the next registration. An unknown token is a 404 and reaches nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agent_api.runtime import ssrf
from agent_api.runtime.embedded_server import EmbeddedServer
from agent_api.runtime.pinned_http import PinnedTransport

log = logging.getLogger("agent_api.runtime")

PREFIX = "/r/"
# A registration that no agent process has taken up within this time is dropped.
UNHELD_TTL_S = 3600.0
# What of the CLI's request reaches the MCP server: what the MCP transports use, nothing that identifies the CLI.
_REQUEST_HEADERS = (
    "content-type",
    "content-length",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
)
# Never taken from the answer (framing is the relay's own; bodies are passed on decoded) or from configured headers.
_FRAMING = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}
)
_DROPPED_RESPONSE = _FRAMING | {"content-encoding"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LINE_END = re.compile(r"\r\n|\r|\n")


def _origin_key(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (
        parts.scheme.lower(),
        (parts.hostname or "").rstrip(".").lower(),
        parts.port or _DEFAULT_PORTS.get(parts.scheme),
    )


@dataclass
class _Route:
    url: str  # as registered
    origin: str  # scheme://host[:port] of `url`
    address: str  # the checked address connections go to
    headers: dict[str, str]
    registered_at: float = field(default_factory=time.monotonic)
    holders: int = 0
    held_once: bool = False
    client: httpx.AsyncClient | None = None

    def http(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(
                transport=PinnedTransport(self.url, self.address),
                timeout=httpx.Timeout(30.0, read=None),  # an SSE stream stays open as long as the CLI wants it
                follow_redirects=False,
                trust_env=False,
            )
        return self.client

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


class McpRelay:
    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        app = Starlette(routes=[Route("/{path:path}", self._relay, methods=methods)])
        self._server = EmbeddedServer(app, timeout_graceful_shutdown=5)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    async def start(self) -> None:
        await self._server.start("mcp-relay")

    async def stop(self) -> None:
        self._server.should_exit = True
        routes, self._routes = list(self._routes.values()), {}
        await asyncio.gather(*(r.aclose() for r in routes), return_exceptions=True)  # ends open streams
        await self._server.stop()

    # --- tokens ------------------------------------------------------------------------------------

    async def register(self, url: str, headers: Mapping[str, str], allowed_hosts: Iterable[str]) -> str:
        """The relay URL the CLI is to use for the MCP server at `url`; raises `ssrf.UnsafeUrl` when `url` fails the
        SSRF check. The connection is pinned to the address checked now."""
        _host, _port, address = await ssrf.pinned_target(url, allowed_hosts)
        parts = urlsplit(url)
        self._drop_unheld()
        token = secrets.token_urlsafe(32)
        self._routes[token] = _Route(
            url=url,
            origin=f"{parts.scheme}://{parts.netloc}",
            address=address,
            headers={k: v for k, v in headers.items() if k.lower() not in _FRAMING},
        )
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.base_url}{PREFIX}{token}{parts.path or '/'}{query}"

    def _tokens(self, configs: Mapping[str, Any]) -> list[str]:
        start = f"{self.base_url}{PREFIX}" if self._server.running else None
        found = []
        for config in configs.values():
            url = config.get("url") if isinstance(config, Mapping) else None
            if start and isinstance(url, str) and url.startswith(start):
                found.append(url[len(start) :].split("/", 1)[0])
        return found

    def hold(self, configs: Mapping[str, Any]) -> None:
        """An agent process is being started with these MCP server configs: keep their tokens until it `release`s."""
        for token in self._tokens(configs):
            route = self._routes.get(token)
            if route is not None:
                route.holders += 1
                route.held_once = True

    async def release(self, configs: Mapping[str, Any]) -> None:
        """The agent process started with these configs has ended: drop the tokens no other process holds."""
        for token in self._tokens(configs):
            route = self._routes.get(token)
            if route is None:
                continue
            route.holders -= 1
            if route.holders <= 0:
                self._routes.pop(token, None)
                await route.aclose()

    def _drop_unheld(self) -> None:
        limit = time.monotonic() - UNHELD_TTL_S
        for token in [t for t, r in self._routes.items() if not r.held_once and r.registered_at < limit]:
            self._routes.pop(token)  # never used by an agent, so it has no client to close

    # --- relaying ----------------------------------------------------------------------------------

    async def _relay(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        token, rest = _split(raw_path.decode("latin-1"))
        route = self._routes.get(token)
        if route is None:
            return JSONResponse({"error": "unknown MCP relay token"}, status_code=404)
        query = request.url.query
        url = f"{route.origin}{rest}{'?' + query if query else ''}"
        headers = httpx.Headers({k: v for k in _REQUEST_HEADERS if (v := request.headers.get(k)) is not None})
        headers["accept-encoding"] = "identity"
        for name, value in route.headers.items():  # the configured headers win, whatever their case
            headers[name] = value
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        client = route.http()
        outgoing = client.build_request(
            request.method, url, headers=headers, content=request.stream() if has_body else None
        )
        try:
            upstream = await client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            log.warning("MCP relay: %s could not be reached: %s", route.origin, type(exc).__name__)
            return _error(f"the MCP server could not be reached: {type(exc).__name__}")
        if 300 <= upstream.status_code < 400:
            await upstream.aclose()
            log.warning("MCP relay: %s answered a redirect (%s), not followed", route.origin, upstream.status_code)
            return _error(f"the MCP server answered a redirect ({upstream.status_code}), which is not followed")
        response_headers = {k: v for k, v in upstream.headers.items() if k not in _DROPPED_RESPONSE}
        body: AsyncIterator[bytes] = upstream.aiter_bytes()
        if upstream.headers.get("content-type", "").lower().startswith("text/event-stream"):
            base = str(upstream.request.url)
            body = _sse(body, lambda data: _endpoint_on_relay(data, base, route.origin, token))
        return _Streamed(upstream, body, upstream.status_code, response_headers)


def _split(path: str) -> tuple[str, str]:
    """`/r/<token>/<rest>` -> (token, "/<rest>"); ("", "") for any other path (no token is "")."""
    if not path.startswith(PREFIX):
        return "", ""
    token, slash, rest = path[len(PREFIX) :].partition("/")
    return token, f"/{rest}" if slash else "/"


def _error(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=502)


def _endpoint_on_relay(data: str, base: str, origin: str, token: str) -> str | None:
    """The relay path for an SSE `endpoint` event's data (resolved against the stream's URL), None when it names
    another origin than the server's."""
    target = urljoin(base, data.strip())
    if _origin_key(target) != _origin_key(origin):
        return None
    parts = urlsplit(target)
    return f"{PREFIX}{token}{parts.path or '/'}{'?' + parts.query if parts.query else ''}"


MAX_SSE_LINE_CHARS = 1024 * 1024
MAX_SSE_EVENT_CHARS = 4 * 1024 * 1024
_SSE_TOO_LARGE = b'event: error\ndata: {"error": "the MCP server sent a line or an event too large to relay"}\n\n'


async def _sse(chunks: AsyncIterator[bytes], endpoint: Callable[[str], str | None]) -> AsyncIterator[bytes]:
    """Server-sent events passed on event by event, each `endpoint` event's data given to `endpoint` to rewrite;
    when it answers None the event is dropped and the stream ends with an `error` event."""
    # utf-8-sig: a leading byte-order mark would otherwise hide the first field's name from the rewrite.
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    pending = ""
    event: list[str] = []
    event_chars = 0
    async for chunk in chunks:
        lines, pending = _lines(pending + decoder.decode(chunk))
        if len(pending) > MAX_SSE_LINE_CHARS:
            # The relay runs in the API process: a server that never ends a line must not hold its memory or time.
            yield _SSE_TOO_LARGE
            return
        out: list[str] = []
        for line in lines:
            if line:
                event.append(line)
                event_chars += len(line)
                if event_chars > MAX_SSE_EVENT_CHARS:
                    yield "".join(out).encode() + _SSE_TOO_LARGE
                    return
                continue
            event_chars = 0
            block = _event_block(event, endpoint)
            event = []
            if block is None:
                log.warning("MCP relay: an SSE endpoint on another origin was refused")
                out.append('event: error\ndata: {"error": "the MCP server named an endpoint on another origin"}\n\n')
                yield "".join(out).encode()
                return
            out.append(block)
        if out:
            yield "".join(out).encode()
    tail = "\n".join([*event, pending]).strip("\n")
    if tail:
        yield tail.encode()


def _lines(text: str) -> tuple[list[str], str]:
    """Complete lines (any of the three SSE line ends) and what is left; a final lone CR waits for a possible LF."""
    lines: list[str] = []
    start = 0
    for match in _LINE_END.finditer(text):
        if match.group() == "\r" and match.end() == len(text):
            break
        lines.append(text[start : match.start()])
        start = match.end()
    return lines, text[start:]


def _field(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name, value[1:] if value.startswith(" ") else value


def _event_block(lines: list[str], endpoint: Callable[[str], str | None]) -> str | None:
    fields = [_field(line) for line in lines]
    if not any(name == "event" and value == "endpoint" for name, value in fields):
        return "".join(f"{line}\n" for line in lines) + "\n"
    rewritten = endpoint("\n".join(value for name, value in fields if name == "data"))
    if rewritten is None:
        return None
    kept = [line for line, (name, _) in zip(lines, fields, strict=True) if name != "data"]
    return "".join(f"{line}\n" for line in kept) + f"data: {rewritten}\n\n"


class _Streamed(StreamingResponse):
    """Streams the upstream answer and closes it however the stream ends (done, failed, or the CLI gone)."""

    def __init__(
        self, upstream: httpx.Response, body: AsyncIterator[bytes], status_code: int, headers: dict[str, str]
    ) -> None:
        super().__init__(body, status_code, headers=headers)
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
