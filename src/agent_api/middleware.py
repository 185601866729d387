"""Pure ASGI middleware: request ids, the access log, the request-body cap and input no database can store."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_api import json_input
from agent_api.errors import REQUEST_ID_HEADER, error_body

access_log = logging.getLogger("agent_api.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Assigns the request id (a client's own, if sane), echoes it in the response and logs each request.

    The access log records the path without its query string, so a `?token=` never reaches a log line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status: dict[str, int] = {}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The 500 is rendered further out (by the server-error handler), after this line is logged.
            status.setdefault("code", 500)
            raise
        finally:
            access_log.info(
                "%s %s %s",
                scope.get("method", "WS"),
                scope["path"],
                status.get("code", 0),
                extra={
                    "request_id": request_id,
                    "method": scope.get("method", "WS"),
                    "path": scope["path"],
                    "status": status.get("code", 0),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


class BodySizeLimitMiddleware:
    """413 for bodies over `max_bytes`: by Content-Length up front, or by buffering a chunked body up to the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await self._reject(scope, send)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._reject(scope, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"Request body exceeds {self.max_bytes} bytes"
        await send_error(scope, send, 413, "payload_too_large", message, {"max_bytes": self.max_bytes})


async def send_error(scope: Scope, send: Send, status: int, code: str, message: str, details: Any = None) -> None:
    request_id = scope.get("state", {}).get("request_id")
    body = json.dumps(error_body(code, message, request_id, details)).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# `\u0000` escaped in a JSON string (an even run of backslashes before it is text, not an escape).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NonFinite(name)


class InputHygieneMiddleware:
    """422 for text no database column can hold (NUL characters) and for NaN / Infinity, which Python's JSON
    parser accepts but JSON does not; 400 for a NUL in the path or query. Caught here once, instead of as a
    database error (PostgreSQL refuses both) on whichever route a client tries."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if (
            "\x00" in scope["path"]
            or b"%00" in scope.get("query_string", b"")
            or b"\x00" in scope.get("query_string", b"")
        ):
            if scope["type"] == "http":
                await send_error(scope, send, 400, "invalid_characters", "The URL contains a NUL character")
            else:
                await send({"type": "websocket.close", "code": 4400})
            return
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # FastAPI reads an untyped body as JSON, and a content type in any case; with several, one may be JSON.
        content_types = [value.lower() for name, value in scope["headers"] if name == b"content-type"]
        if content_types and not any(b"json" in value for value in content_types):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _problem(body)
        if problem is not None:
            await send_error(scope, send, 422, *problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _problem(body: bytes) -> tuple[str, str] | None:
    """(error code, message) for a JSON body no route may see, else None."""
    if b"\x00" in body:  # never in UTF-8 JSON; UTF-16 or UTF-32 would hide brackets and NULs from these checks
        return "invalid_characters", "The body must be UTF-8 JSON without NUL bytes"
    if json_input.nests_too_deep(body):
        return "too_deeply_nested", str(json_input.TooDeep())
    if _JSON_NUL.search(body):
        return "invalid_characters", "Text may not contain NUL (\\u0000) characters"
    if b"NaN" in body or b"Infinity" in body:
        try:
            json.loads(body, parse_constant=_refuse_constant)
        except _NonFinite as exc:
            return "invalid_characters", f"{exc} is not a JSON number"
        except ValueError:
            return None  # not JSON at all: the route's own validation says so
    return None
