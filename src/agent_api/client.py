"""A small async client for agent-api: REST over httpx, the session stream over websockets.

    async with AgentApiClient("http://127.0.0.1:8000", api_key="...") as api:
        s = await api.create_session(permission_mode="default")
        async with api.open_stream(s["id"]) as stream:
            await stream.send_query("run: ls")
            async for frame in stream:
                ...

The stream reconnects by itself after a dropped connection (resuming with `after_seq`), so every persisted
event reaches the caller exactly once, in order. Each connection authenticates with a fresh single-use ticket.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Self
from urllib.parse import urlencode

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

API_PREFIX = "/api/v1"
__all__ = ["AgentApiClient", "ApiError", "SessionStream", "StreamClosed", "WebhookVerificationError", "verify_webhook"]
RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 4008})
_REFUSED = {4401: (401, "unauthenticated"), 4403: (403, "forbidden"), 4404: (404, "session_not_found")}
_TRANSIENT = (OSError, TimeoutError, InvalidHandshake, httpx.TransportError, ConnectionClosed)


class ApiError(Exception):
    """An error answer from the server, in its error shape (`code`, `message`, `request_id`)."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.request_id = status, code, message, request_id

    @classmethod
    def from_response(cls, r: httpx.Response) -> ApiError:
        try:
            body = r.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return cls(r.status_code, str(error.get("code")), str(error.get("message")), error.get("request_id"))
        detail = body.get("detail") if isinstance(body, dict) else None
        message = str(detail) if detail else (r.text[:200] or r.reason_phrase)
        return cls(r.status_code, "http_error", message, r.headers.get("x-request-id"))


class StreamClosed(ApiError):
    """The stream ended for good: refused (4401 / 4403 / 4404) or lost after the last reconnect attempt."""

    def __init__(self, close_code: int, reason: str) -> None:
        status, code = _REFUSED.get(close_code, (0, "stream_lost"))
        super().__init__(status, code, f"{reason or 'closed'} ({close_code})")
        self.close_code = close_code


def _body(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise ApiError.from_response(r)
    return r.json() if r.content else None


async def _sse_records(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """Server-Sent Events records: `{"id", "event", "data"}` (those present) per blank-line-ended block, the
    lines of a multi-line `data` joined; comments (heartbeats) and unknown fields are skipped."""
    record: dict[str, str] = {}
    async for line in lines:
        if not line:
            if record:
                yield record
            record = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            record["data"] = f"{record['data']}\n{value}" if "data" in record else value
        elif name in ("id", "event"):
            record[name] = value


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secret: str) -> dict[str, Any]:
    """The event of a webhook request, once its Standard Webhooks signature and timestamp check out against
    `secret` (the `whsec_...` value shown at creation); raises `WebhookVerificationError` otherwise. Pass the raw
    body, not parsed and re-serialized JSON."""
    return Webhook(secret).verify(payload, dict(headers))


class AgentApiClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        reconnect_attempts: int = 5,
        reconnect_backoff_s: float = 0.25,
        use_tickets: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/").removesuffix(API_PREFIX)
        self.base_url = root if "://" in root else f"http://{root}"
        self.token, self.api_key, self.refresh_token = token, api_key, None
        self.reconnect_attempts, self.reconnect_backoff_s = reconnect_attempts, reconnect_backoff_s
        self.use_tickets = use_tickets
        self._http = httpx.AsyncClient(base_url=self.base_url + API_PREFIX, timeout=timeout, transport=transport)
        self._refresh_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def credential(self) -> str | None:
        return self.token or self.api_key

    async def request(self, method: str, path: str, *, json: Any = None, **kwargs: Any) -> Any:
        """One API call; a 401 on a login token refreshes it once and retries. Raises `ApiError` on 4xx/5xx."""
        used = self.credential
        r = await self._send(method, path, json, used, **kwargs)
        if r.status_code == 401 and self.refresh_token and used == self.token:
            await self._refresh(used)
            r = await self._send(method, path, json, self.credential, **kwargs)
        return _body(r)

    async def _send(self, method: str, path: str, body: Any, cred: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {cred}"} if cred else {}
        return await self._http.request(method, path, json=body, headers=headers | kwargs.pop("headers", {}), **kwargs)

    async def _refresh(self, stale: str | None) -> None:
        async with self._refresh_lock:
            if self.token != stale:  # another call refreshed meanwhile: reusing a rotated token would revoke all
                return
            self._store(_body(await self._http.post("/auth/refresh", json={"refresh_token": self.refresh_token})))

    def _store(self, pair: dict[str, Any]) -> None:
        self.token, self.refresh_token = pair["access_token"], pair["refresh_token"]

    async def login(self, username: str, password: str) -> dict[str, Any]:
        pair: dict[str, Any] = _body(
            await self._http.post("/auth/login", json={"username": username, "password": password})
        )
        self._store(pair)
        return pair

    async def me(self) -> dict[str, Any]:
        return await self.request("GET", "/auth/me")

    async def create_session(self, **settings: Any) -> dict[str, Any]:
        return await self.request("POST", "/sessions", json=settings)

    async def get_session(self, session_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/sessions/{session_id}")

    async def query(
        self, session_id: str, message: str, wait: bool = False, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        timeout = httpx.Timeout(self._http.timeout.connect, read=None) if wait else httpx.USE_CLIENT_DEFAULT
        body = {"message": message, "wait": wait}
        path = f"/sessions/{session_id}/query"
        return await self.request("POST", path, json=body, headers=headers, timeout=timeout)

    async def answer_permission(
        self,
        session_id: str,
        request_id: str,
        decision: str,
        message: str | None = None,
        *,
        remember: str | None = None,
    ) -> dict[str, Any]:
        """Answer a pending request; `remember="session"` also adds a rule, so matching calls are not asked again."""
        body: dict[str, Any] = {"decision": decision, "message": message}
        if remember is not None:
            body["remember"] = remember
        return await self.request("POST", f"/sessions/{session_id}/permissions/{request_id}", json=body)

    async def stream_ticket(self, session_id: str) -> str:
        """A single-use ticket (valid 30 s) for one stream connection."""
        return str((await self.request("POST", f"/sessions/{session_id}/stream-ticket"))["ticket"])

    def open_stream(self, session_id: str, *, after_seq: int | None = None, partial: bool = False) -> SessionStream:
        return SessionStream(self, session_id, after_seq=after_seq, partial=partial)

    async def stream(
        self, session_id: str, *, after_seq: int | None = None, partial: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Every server frame of the session, reconnecting as needed; persisted events exactly once."""
        async with self.open_stream(session_id, after_seq=after_seq, partial=partial) as s:
            async for frame in s:
                yield frame

    async def events(self, session_id: str, after_seq: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The session's frames over Server-Sent Events (`GET /sessions/{id}/events`): `connected`, then every
        persisted event after `after_seq` (sent as `Last-Event-ID`) or, without it, from now on. It does not
        reconnect: the iterator ends when the server ends the stream (a restart, say); resume from the last `seq`."""
        headers = {"Accept": "text/event-stream"}
        if after_seq is not None:
            headers["Last-Event-ID"] = str(after_seq)
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)  # an idle stream gets only heartbeats
        path = f"/sessions/{session_id}/events"
        for attempt in range(2):
            used = self.credential
            auth = {"Authorization": f"Bearer {used}"} if used else {}
            async with self._http.stream("GET", path, headers=headers | auth, timeout=timeout) as r:
                if r.status_code == 401 and attempt == 0 and self.refresh_token and used == self.token:
                    await r.aclose()
                    await self._refresh(used)
                    continue
                if r.status_code >= 400:
                    await r.aread()
                    raise ApiError.from_response(r)
                async for record in _sse_records(r.aiter_lines()):
                    if "data" in record:
                        yield json.loads(record["data"])
                return

    async def create_webhook(
        self, url: str, events: list[str], *, description: str | None = None, is_global: bool = False
    ) -> dict[str, Any]:
        """Register an endpoint; the answer holds the signing `secret`, shown only this once."""
        body = {"url": url, "events": events, "description": description, "is_global": is_global}
        return await self.request("POST", "/webhooks", json=body)

    async def list_webhooks(self, page: int = 1, page_size: int = 20) -> dict[str, Any]:
        return await self.request("GET", "/webhooks", params={"page": page, "page_size": page_size})

    async def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/webhooks/{webhook_id}")

    async def update_webhook(self, webhook_id: str, **changes: Any) -> dict[str, Any]:
        """Change `url`, `events`, `description` or `is_active` (True re-enables a disabled endpoint)."""
        return await self.request("PATCH", f"/webhooks/{webhook_id}", json=changes)

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.request("DELETE", f"/webhooks/{webhook_id}")

    async def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/webhooks/{webhook_id}/rotate-secret")

    async def test_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Queue a signed `webhook.test` event: `{delivery_id, event_id}`."""
        return await self.request("POST", f"/webhooks/{webhook_id}/test")

    async def webhook_deliveries(self, webhook_id: str, page: int = 1, page_size: int = 20) -> dict[str, Any]:
        params = {"page": page, "page_size": page_size}
        return await self.request("GET", f"/webhooks/{webhook_id}/deliveries", params=params)

    async def _ws_url(self, session_id: str, params: dict[str, Any]) -> str:
        auth: dict[str, str] = {}
        if self.use_tickets and self.credential:
            try:
                auth["ticket"] = await self.stream_ticket(session_id)
            except ApiError as exc:  # a server without tickets: the token is the only way in
                if not (exc.status == 405 or (exc.status == 404 and exc.code != "session_not_found")):
                    raise
        if not auth and self.credential:
            auth["token"] = self.credential
        ws_root = "ws" + self.base_url.removeprefix("http")
        return f"{ws_root}{API_PREFIX}/sessions/{session_id}/stream?{urlencode(params | auth)}"


class SessionStream:
    """One session's stream across reconnects: iterate it for frames, and send frames on it."""

    def __init__(self, client: AgentApiClient, session_id: str, *, after_seq: int | None, partial: bool) -> None:
        self.client, self.session_id, self.partial = client, session_id, partial
        self.last_seq = after_seq
        self.attempts = 0  # connection attempts, first one included
        self.connections = 0  # connections that reached `connected`
        self._ws: ClientConnection | None = None
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> Self:
        await self._connection()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            if self._closed:
                raise StopAsyncIteration
            ws = await self._connection()  # may reconnect, queueing its `connected` frame
            if self._pending:
                return self._pending.popleft()
            try:
                frame = self._accept(json.loads(await ws.recv()))
            except ConnectionClosed as exc:
                if self._ws is ws:
                    self._ws = None
                if exc.rcvd is not None and exc.rcvd.code == 1000:
                    raise StopAsyncIteration from None
                self._check(exc)
                continue
            if frame is not None:
                return frame

    def _accept(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        seq = frame.get("seq")
        if isinstance(seq, int):
            if self.last_seq is not None and seq <= self.last_seq:
                return None  # already delivered before a reconnect
            self.last_seq = seq
        elif frame.get("type") == "connected" and self.last_seq is None:
            self.last_seq = int((frame.get("data") or {}).get("latest_seq") or 0)
        return frame

    @staticmethod
    def _check(exc: ConnectionClosed) -> None:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        if code not in RECONNECT_CODES:
            raise StreamClosed(code, exc.rcvd.reason if exc.rcvd else "") from exc

    async def _connection(self) -> ClientConnection:
        async with self._lock:
            if self._closed:
                raise StreamClosed(1000, "closed by the client")
            failures = 0
            while self._ws is None:
                try:
                    self._ws = await self._open()
                except (*_TRANSIENT, ApiError) as exc:
                    if isinstance(exc, ConnectionClosed):
                        self._check(exc)
                    if isinstance(exc, ApiError) and exc.status < 500:  # refused, or the stream itself closed
                        raise
                    failures += 1
                    if not self.connections or failures > self.client.reconnect_attempts:
                        raise StreamClosed(1006, f"cannot connect after {failures} attempt(s): {exc}") from exc
                    await asyncio.sleep(min(self.client.reconnect_backoff_s * 2 ** (failures - 1), 5.0))
            return self._ws

    async def _open(self) -> ClientConnection:
        """Connect and read `connected`, so a refusal (4401/4404) surfaces here and nothing is sent too early."""
        params: dict[str, Any] = {} if self.last_seq is None else {"after_seq": self.last_seq}
        if self.partial:
            params["partial"] = 1
        self.attempts += 1
        url = await self.client._ws_url(self.session_id, params)
        ws = await connect(url, open_timeout=15, max_size=16 * 1024 * 1024)
        try:
            hello = self._accept(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        except BaseException:
            await ws.close()
            raise
        if hello is not None:
            self._pending.append(hello)
        self.connections += 1
        return ws

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a client frame; after a dropped connection it goes out on the next one."""
        for _ in range(2):
            ws = await self._connection()
            try:
                await ws.send(json.dumps(frame))
                return
            except ConnectionClosed as exc:
                if self._ws is ws:
                    self._ws = None
                self._check(exc)
        raise StreamClosed(1006, "could not send the frame")

    async def send_query(self, message: str) -> None:
        await self.send({"type": "query", "message": message})

    async def send_permission_response(
        self, request_id: str, decision: str, message: str | None = None, *, remember: str | None = None
    ) -> None:
        body = {"type": "permission_response", "request_id": request_id, "decision": decision}
        extra = {"message": message} if message else {}
        await self.send(body | extra | ({"remember": remember} if remember else {}))

    async def interrupt(self) -> None:
        await self.send({"type": "interrupt"})

    async def ping(self) -> None:
        await self.send({"type": "ping"})
