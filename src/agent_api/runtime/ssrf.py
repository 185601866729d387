"""Refusing URLs that point into the server's own network (SSRF): loopback, private, link-local, metadata.

Used for MCP server URLs, webhook URLs and every network target an agent names outside its sandboxed Bash
(WebFetch, URLs in MCP tool inputs, hosts the sandbox's network proxy asks about).

Every address the host resolves to is checked, so a name with one public and one private address is refused.
Numeric host forms such as ``http://2130706433/`` or ``http://0x7f.1/`` are resolved by the C library to the
address they denote and so meet the same check. The server's own connections (webhook deliveries, MCP health
checks, and the MCP relay that stands between a session's agent and its HTTP/SSE MCP servers) connect to the
address `pinned_target` checked and never follow redirects, so DNS rebinding between the check and the connection
cannot redirect them. Connections the agent CLI opens itself (WebFetch, its sandbox proxy) are checked by URL
before the tool runs, and are not pinned: full egress control needs a network policy or egress proxy where the
server is deployed (SECURITY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import Iterable
from contextvars import ContextVar
from urllib.parse import urlsplit

# Cloud metadata endpoints by name; their addresses are link-local or private and are refused anyway.
_METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})


class UnsafeUrl(ValueError):
    pass


class UnresolvableHost(UnsafeUrl):
    pass


def _parsed(url: str) -> tuple[str, str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as exc:
        raise UnsafeUrl(f"malformed URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("only http and https URLs are allowed")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not allowed; send them as a header")
    # Other URL parsers (the agent CLI's among them) read "\\", "%" or control characters differently and could
    # reach another host than the one checked here: only plain names and IP literals pass.
    if not _PLAIN_HOST.fullmatch(parts.netloc.rsplit("@", 1)[-1]) or any(c in url for c in "\\\t\r\n "):
        raise UnsafeUrl("the URL's host may contain only letters, digits, '-', '.', ':' and an IP literal in brackets")
    return parts.scheme, parts.hostname.rstrip(".").lower()


_PLAIN_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def is_allowed_host(host: str, allowed_hosts: Iterable[str]) -> bool:
    return host in {h.strip().rstrip(".").lower() for h in allowed_hosts}


def blocked_reason(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4 carried inside IPv6 (mapped, 6to4, Teredo) is judged as the IPv4 address it reaches.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            ip = embedded
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "private or reserved"
    return None


_NUMERIC_PART = re.compile(r"^(0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)$")


def inet_aton_form(host: str) -> str | None:
    """The IPv4 address an inet_aton-style host denotes (`2130706433`, `0x7f.1`, `0177.0.0.1`), else None.

    Checked ourselves rather than trusting every resolver to expand these forms the way browsers and glibc do.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    values = [
        int(p, 16) if p.startswith("0x") else int(p, 8) if len(p) > 1 and p.startswith("0") else int(p or "0")
        for p in parts
    ]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(parts)):
        return None
    number = last
    for i, v in enumerate(head):
        number += v << (8 * (3 - i))
    return str(ipaddress.IPv4Address(number))


# Answers looked up ahead by `prefetch` for the current request only (never shared between requests, so a name
# is always checked as it resolves now).
_prefetched: ContextVar[dict[tuple[str, int], list[str] | UnresolvableHost] | None] = ContextVar(
    "mcp_prefetched", default=None
)


async def _lookup(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"the host {host!r} cannot be resolved") from exc
    return [str(info[4][0]) for info in infos]


async def _resolve(host: str, port: int) -> list[str]:
    answer = (_prefetched.get() or {}).get((host, port))
    if isinstance(answer, UnresolvableHost):
        raise answer
    return answer if answer is not None else await _lookup(host, port)


def _target(url: str) -> tuple[str, int] | None:
    """The (host, port) a check of `url` would resolve, or None when it needs no lookup."""
    try:
        scheme, host = _parsed(url)
    except UnsafeUrl:
        return None
    if inet_aton_form(host) is not None or host in _METADATA_HOSTS:
        return None
    return host, 443 if scheme == "https" else 80


async def prefetch(urls: Iterable[str], timeout_s: float = 10.0) -> None:
    """Resolve the hosts of `urls` now, concurrently and under one deadline, for the checks this request makes
    next. Callers do it before taking SQLite's write lock, so slow DNS never holds up other writers."""
    answers: dict[tuple[str, int], list[str] | UnresolvableHost] = {}

    async def one(target: tuple[str, int]) -> None:
        try:
            answers[target] = await _lookup(*target)
        except UnresolvableHost as exc:
            answers[target] = exc

    targets = {t for t in map(_target, urls) if t is not None}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(one(t) for t in targets))
    for target in targets - answers.keys():
        answers[target] = UnresolvableHost(f"the host {target[0]!r} did not resolve in time")
    _prefetched.set(answers)


async def check_url(url: str, allowed_hosts: Iterable[str]) -> None:
    """Raise `UnsafeUrl` unless `url` is http(s) and every address of its host is public (or the host allowlisted).

    `UnresolvableHost` (a subclass) means the name did not resolve; callers decide whether that is fatal.
    """
    scheme, host = _parsed(url)
    if is_allowed_host(host, allowed_hosts):
        return
    await _checked_addresses(host, scheme)


async def _checked_addresses(host: str, scheme: str, port: int | None = None) -> list[str]:
    if host in _METADATA_HOSTS:
        raise UnsafeUrl(f"the host {host!r} is a cloud metadata endpoint")
    numeric = inet_aton_form(host)
    addresses = [numeric] if numeric else await _resolve(host, port or (443 if scheme == "https" else 80))
    for address in addresses:
        reason = blocked_reason(address)
        if reason:
            raise UnsafeUrl(f"the host {host!r} resolves to a {reason} address, which is not allowed")
    return addresses


async def pinned_target(url: str, allowed_hosts: Iterable[str]) -> tuple[str, int, str]:
    """(host, port, address) to connect to for `url`: the address passed the same check as `check_url`, and the
    caller connects to it rather than resolving the name again, which closes the DNS-rebinding window."""
    scheme, host = _parsed(url)
    port = urlsplit(url).port or (443 if scheme == "https" else 80)
    if is_allowed_host(host, allowed_hosts):
        numeric = inet_aton_form(host)
        addresses = [numeric] if numeric else await _lookup(host, port)
    else:
        addresses = await _checked_addresses(host, scheme, port)
    if not addresses:
        raise UnresolvableHost(f"the host {host!r} cannot be resolved")
    return host, port, addresses[0]
