"""An httpx transport for the server's own outbound connections that connects to the address the SSRF check passed.

`ssrf.pinned_target` resolves the URL's host once and checks every address; this transport then sends each request
to that address, whatever the name resolves to by the time the connection is made, so DNS rebinding between the
check and the connect cannot reach the server's own network. The request keeps the name in its `Host` header and,
over TLS, as the SNI name the certificate is verified against. A request for any other origin (a redirect, an SSE
`endpoint` event naming another host) is refused rather than resolved, and proxies from the environment are not
used: the connection goes straight to the checked address.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from agent_api.runtime import ssrf

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host.rstrip(".").lower(), url.port or _DEFAULT_PORTS.get(url.scheme)


class PinnedTransport(httpx.AsyncBaseTransport):
    """Sends requests for one origin to one checked address; any other origin is a connection error."""

    def __init__(self, url: str, address: str) -> None:
        parsed = httpx.URL(url)
        self.origin = _origin(parsed)
        self.address = address
        self._sni = parsed.host.rstrip(".")
        self._inner = httpx.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if _origin(request.url) != self.origin:
            raise httpx.ConnectError(
                f"refused: only {self.origin[1]!r}, the host that was checked, may be reached", request=request
            )
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions["sni_hostname"] = self._sni
        # The original request's headers already hold `Host: <name>` (with a non-default port), so only the address
        # the socket connects to changes.
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=self.address),
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def transport_for(url: str, allowed_hosts: Iterable[str]) -> PinnedTransport:
    """Check `url` (raising `ssrf.UnsafeUrl` like `ssrf.check_url`) and pin its connections to the checked address."""
    _host, _port, address = await ssrf.pinned_target(url, allowed_hosts)
    return PinnedTransport(url, address)
