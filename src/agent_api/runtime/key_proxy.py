"""A loopback relay in front of the model API, so the operator's credential never enters an agent's environment.

The agent CLI gets a random per-process token and this relay's address as `ANTHROPIC_BASE_URL`; the relay checks
the token, swaps in the real `x-api-key` or bearer token, and streams the upstream's answer back unchanged. An agent
whose Bash prints its environment finds only the token, which works nowhere but this loopback port (and sandboxed
Bash has no network to reach it).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent_api.runtime.embedded_server import EmbeddedServer

DEFAULT_UPSTREAM = "https://api.anthropic.com"
# Not forwarded in either direction: per-connection framing, and the credentials this relay replaces.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}
)
_CREDENTIALS = frozenset({"x-api-key", "authorization"})


class CredentialProxy:
    def __init__(self, upstream: str | None, *, api_key: str | None = None, auth_token: str | None = None) -> None:
        if not (api_key or auth_token):
            raise ValueError("the relay needs an API key or an auth token to add")
        self.upstream = (upstream or DEFAULT_UPSTREAM).rstrip("/")
        self.token = secrets.token_urlsafe(32)
        self._credential = {"x-api-key": api_key} if api_key else {"authorization": f"Bearer {auth_token}"}
        self.uses_auth_token = not api_key
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=30.0), follow_redirects=False)
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        self._server = EmbeddedServer(Starlette(routes=[Route("/{path:path}", self._relay, methods=methods)]))

    @property
    def base_url(self) -> str:
        return self._server.base_url

    async def start(self) -> None:
        await self._server.start("model-key-relay")

    async def stop(self) -> None:
        await self._server.stop()
        await self._client.aclose()

    def _authorized(self, request: Request) -> bool:
        presented = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization") or ""
        if bearer.lower().startswith("bearer "):
            presented = presented or bearer[7:]
        return hmac.compare_digest(presented.encode(), self.token.encode())

    async def _relay(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse(
                {"type": "error", "error": {"type": "authentication_error", "message": "invalid relay token"}},
                status_code=401,
            )
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP and k not in _CREDENTIALS}
        headers.update(self._credential)
        url = f"{self.upstream}/{request.path_params['path']}"
        upstream_request = self._client.build_request(
            request.method, url, params=request.query_params, headers=headers, content=await request.body()
        )
        try:
            upstream = await self._client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            message = f"the model API could not be reached: {type(exc).__name__}"
            return JSONResponse({"type": "error", "error": {"type": "api_error", "message": message}}, 502)
        response_headers = {k: v for k, v in upstream.headers.items() if k not in _HOP_BY_HOP}
        return StreamingResponse(
            _raw(upstream), upstream.status_code, headers=response_headers, background=BackgroundTask(upstream.aclose)
        )


async def _raw(upstream: httpx.Response) -> AsyncIterator[bytes]:
    # As sent: server-sent events pass through chunk by chunk, compressed bodies stay compressed.
    async for chunk in upstream.aiter_raw():
        yield chunk
