"""SSRF: every way out of the server, tried with every spelling of an address inside its own network.

Paths: MCP server registration (create as http and sse, update, import), MCP health checks, the MCP transports a
session's agent opens, webhooks (registration, update, test and real deliveries), and the agent's own web tools
(WebFetch, URLs in MCP tool inputs). Forms: loopback, private and link-local (cloud metadata) addresses, numeric
spellings (decimal, hex, octal, short), IPv6 (plain, IPv4-mapped, long), names resolving to loopback, a redirect to
loopback, and DNS rebinding between the check and the connection.

The proof is always a real socket: loopback targets point at a `LoopbackService` listening on 127.0.0.1 and ::1
that counts every connection, and it sees none. Private and link-local targets must never be connected at all:
`OffHostConnects`, a test double on `socket.connect` for this whole module, refuses and records every connection
this process tries to an address outside loopback (so nothing here can reach a real private range or the
internet), and each test asserts it recorded none. The agent CLI is another process, out of that double's reach:
before a private target is handed to it, the in-process guard the CLI path uses is asserted to refuse it. Besides
the socket, the API says no: a 4xx in the documented error shape, a refused tool call, or an unhealthy health check
or failed delivery naming the refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api import webhook_outbox
from agent_api.app import create_app
from agent_api.mcp_servers import service as mcp_service
from agent_api.runtime import permissions, pinned_http, ssrf
from tests.conftest import (
    SessionsApi,
    UserAccount,
    Users,
    app_state,
    assert_error_shape,
    make_client,
    make_settings,
    wait_until,
)
from tests.mcp.conftest import ECHO_SERVER

# The one host the module's settings allowlist (for MCP and webhooks): a loopback address of its own, so no
# attack form below is covered by it.
ALLOWED = "127.0.0.2"
PUBLIC = "93.184.216.34"  # a global address the check accepts; connections to it are refused by OffHostConnects
REBIND = "rebind.ssrf-test.invalid"
PINNED = "pinned.ssrf-test.invalid"
MCP = "/api/v1/mcp-servers"
HOOKS = "/api/v1/webhooks"


def _hosts_file_loopback_name() -> str | None:
    """A name other than localhost that /etc/hosts maps to 127.0.0.1 on this machine, if there is one."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/hosts").read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if fields and fields[0] == "127.0.0.1":
                names = [n for n in fields[1:] if "localhost" not in n and ssrf._PLAIN_HOST.fullmatch(n)]
                if names:
                    return names[0]
    return None


# (host as written in the URL, what it is). Loopback forms get the LoopbackService's port, so a connection would
# be counted; the others never get as far as a connection.
LOOPBACK_FORMS = [
    "127.0.0.1",
    "127.1",
    "0.0.0.0",  # the unspecified address: a connection to it reaches this host
    "0",
    "localhost",
    "localhost.",
    "LocalHost",
    "2130706433",  # 127.0.0.1, decimal
    "0x7f000001",  # hex
    "0x7f.1",  # hex, short form
    "0177.0.0.1",  # octal
    "0177.1",  # octal, short form
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "[::ffff:7f00:1]",
]
HOSTS_FILE_NAME = _hosts_file_loopback_name()
if HOSTS_FILE_NAME:
    LOOPBACK_FORMS.append(HOSTS_FILE_NAME)
PRIVATE_FORMS = [
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0x0a000001",  # 10.0.0.1, hex
    "[fd00::1]",  # unique local IPv6
    "[::ffff:10.0.0.1]",
]
LINK_LOCAL_FORMS = [
    "169.254.169.254",
    "0xa9fea9fe",  # 169.254.169.254, hex
    "[::ffff:169.254.169.254]",
    "[fe80::1]",
    "metadata.google.internal",
    "metadata",
]
FORMS = (
    [(h, "loopback") for h in LOOPBACK_FORMS]
    + [(h, "private") for h in PRIVATE_FORMS]
    + [(h, "link-local") for h in LINK_LOCAL_FORMS]
)
FORM_IDS = [f"{kind}:{host}" for host, kind in FORMS]


def bare(host: str) -> str:
    """The host as the allowlist and the SSRF check spell it."""
    return host.strip("[]").rstrip(".").lower()


# --- test doubles and real listeners ----------------------------------------------------------------------------


class OffHostConnects:
    """Test double for `socket.socket.connect` / `connect_ex` in this process: a connection to any address outside
    loopback is recorded and refused with ECONNREFUSED, without a packet leaving the host. Loopback and unix-socket
    connections go through for real (so a `LoopbackService` counts them)."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []

    @staticmethod
    def off_host(address: Any) -> bool:
        if not isinstance(address, tuple):
            return False  # a unix socket path
        try:
            ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        except ValueError:
            return True  # a name: refuse rather than let the socket module resolve it
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return not ip.is_loopback

    def install(self, mp: pytest.MonkeyPatch) -> None:
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        double = self

        def connect(sock: socket.socket, address: Any) -> None:
            if double.off_host(address):
                double.attempts.append((str(address[0]), int(address[1])))
                raise ConnectionRefusedError(errno.ECONNREFUSED, "refused by the OffHostConnects test double")
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            if double.off_host(address):
                double.attempts.append((str(address[0]), int(address[1])))
                return errno.ECONNREFUSED
            return real_connect_ex(sock, address)

        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)


class LoopbackService:
    """A real HTTP service standing for what must not be reached (the model-key relay, a database, an internal
    admin page). On 127.0.0.1 it listens on ::1 too, on the same port. It counts TCP connections (requests or not),
    records each request, and answers 200 with a marker, or 302 to `redirect_to`."""

    def __init__(self, host: str = "127.0.0.1", redirect_to: str | None = None) -> None:
        self.host = host
        self.redirect_to = redirect_to
        self.marker = f"LOOPBACK-{uuid.uuid4().hex}"
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        for _ in range(20):
            try:
                self._servers = self._bind()
                break
            except OSError:
                for server in self._servers:
                    server.server_close()
        assert self._servers, "no free port on both 127.0.0.1 and ::1"
        self.port = self._servers[0].server_address[1]
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _bind(self) -> list[ThreadingHTTPServer]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                with owner._lock:
                    owner.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = owner.marker.encode()
                self.send_response(302 if owner.redirect_to else 200)
                if owner.redirect_to:
                    self.send_header("location", owner.redirect_to)
                self.send_header("content-length", str(len(body)))
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        class Counting(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                accepted = super().get_request()
                with owner._lock:
                    owner.connections += 1
                return accepted

        class CountingV6(Counting):
            address_family = socket.AF_INET6

        servers: list[ThreadingHTTPServer] = [Counting((self.host, 0), Handler)]
        if self.host == "127.0.0.1":
            servers.append(CountingV6(("::1", servers[0].server_address[1]), Handler))
        return servers

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


class RebindingResolver:
    """Test double for DNS rebinding of one name: the SSRF check's lookup (`ssrf._lookup`) answers `at_check`,
    and the system resolver, which a connection made by name would use, answers `at_connect` (or fails when None).
    Other names resolve as usual."""

    def __init__(self, mp: pytest.MonkeyPatch, name: str, at_check: str, at_connect: str | None) -> None:
        self.name, self.at_check, self.at_connect = name, at_check, at_connect
        self.check_lookups = 0
        self.connect_lookups = 0
        real_lookup, real_getaddrinfo = ssrf._lookup, socket.getaddrinfo

        async def lookup(host: str, port: int) -> list[str]:
            if host == self.name:
                self.check_lookups += 1
                return [self.at_check]
            return await real_lookup(host, port)

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else host
            if isinstance(name, str) and name.rstrip(".").lower() == self.name:
                self.connect_lookups += 1
                if self.at_connect is None:
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
                return real_getaddrinfo(self.at_connect, port, *args, **kwargs)
            return real_getaddrinfo(host, port, *args, **kwargs)

        mp.setattr(ssrf, "_lookup", lookup)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
async def offhost() -> AsyncIterator[OffHostConnects]:
    double = OffHostConnects()
    with pytest.MonkeyPatch.context() as mp:
        double.install(mp)
        # The double must catch what the event loop does (httpx, anyio and asyncio connect through it): shown with a
        # documentation address before any test relies on it.
        with pytest.raises(ConnectionRefusedError):
            await asyncio_open("192.0.2.1", 9)
        assert double.attempts == [("192.0.2.1", 9)]
        double.attempts.clear()
        yield double


async def asyncio_open(host: str, port: int) -> None:
    _, writer = await asyncio.open_connection(host, port)
    writer.close()


@pytest.fixture(autouse=True)
def nothing_off_host(offhost: OffHostConnects) -> Iterator[None]:
    """Unless a test takes the attempts itself, it must have tried no connection outside loopback."""
    offhost.attempts.clear()
    yield
    assert offhost.attempts == [], "a connection outside loopback was attempted"


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackService]:
    service = LoopbackService()
    yield service
    service.close()


@pytest.fixture
def redirect_target() -> Iterator[LoopbackService]:
    service = LoopbackService()
    yield service
    service.close()


@pytest.fixture
def redirector(redirect_target: LoopbackService) -> Iterator[LoopbackService]:
    """On the allowlisted host: answers every request with a 302 to `redirect_target` on 127.0.0.1."""
    service = LoopbackService(ALLOWED, redirect_to=f"{redirect_target.url}mcp")
    yield service
    service.close()


@pytest.fixture(scope="module")
def allowed_service() -> Iterator[LoopbackService]:
    """A plain service on the allowlisted host (answers 200)."""
    service = LoopbackService(ALLOWED)
    yield service
    service.close()


def _start_echo(transport: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind((ALLOWED, 0))
        port = s.getsockname()[1]
    # The SDK's own DNS-rebinding protection stays on: only these Host headers are answered.
    hosts = [f"{ALLOWED}:{port}", f"{PINNED}:{port}"]
    code = (
        "import runpy; from mcp.server.transport_security import TransportSecuritySettings as T; "
        f"s = runpy.run_path({str(ECHO_SERVER)!r}, run_name='echo')['server']; "
        f"s.settings.host, s.settings.port = {ALLOWED!r}, {port}; "
        f"s.settings.transport_security = T(enable_dns_rebinding_protection=True, allowed_hosts={hosts!r}); "
        f"s.run({transport!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((ALLOWED, port), timeout=0.2).close()
            return proc, port
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, f"the {transport} MCP server did not start"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def echo_servers() -> Iterator[dict[str, int]]:
    """Real MCP servers (the `mcp` SDK's FastMCP) on the allowlisted host: {"http": port, "sse": port}."""
    started = {name: _start_echo(transport) for name, transport in (("http", "streamable-http"), ("sse", "sse"))}
    try:
        yield {name: port for name, (_, port) in started.items()}
    finally:
        for proc, _ in started.values():
            proc.terminate()
            proc.wait(10)


def echo_url(server_type: str, port: int, host: str = ALLOWED) -> str:
    return f"http://{host}:{port}/{'mcp' if server_type == 'http' else 'sse'}"


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        database_url,
        mcp_allowed_hosts=[ALLOWED],
        webhook_allowed_hosts=[ALLOWED],
        mcp_health_timeout_s=5.0,
        webhook_timeout_s=2.0,
        webhook_max_per_user=1_000,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def mclient(app: object) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as c:
        yield c


@pytest.fixture(scope="module")
async def alice(app: object, mclient: httpx.AsyncClient) -> UserAccount:
    """A plain user: everything here is what any account could try."""
    return await Users(app, mclient).create()


def target(host: str, port: int, path: str = "mcp") -> str:
    if host in ("metadata.google.internal", "metadata", "169.254.169.254"):
        return f"http://{host}/{path}"  # metadata services listen on port 80
    return f"http://{host}:{port}/{path}"


@contextlib.contextmanager
def allowlisted(app: object, setting: str, *hosts: str) -> Iterator[None]:
    """Add hosts to an allowlist for a moment: how a row with such a URL comes to exist (an admin allowed it,
    then took it back)."""
    settings = app_state(app).settings
    original = list(getattr(settings, setting))
    setattr(settings, setting, [*original, *hosts])
    try:
        yield
    finally:
        setattr(settings, setting, original)


def assert_no_hits(*services: LoopbackService) -> None:
    for service in services:
        assert service.connections == 0 and service.requests == [], (service.host, service.port, service.requests)


# --- MCP servers: registration -----------------------------------------------------------------------------------


def remote(url: str, server_type: str = "http") -> dict[str, Any]:
    return {"name": f"s{uuid.uuid4().hex[:10]}", "server_type": server_type, "config": {"url": url}}


class TestMcpRegistration:
    async def test_unauthenticated_is_401(self, mclient: httpx.AsyncClient, loopback: LoopbackService) -> None:
        r = await mclient.post(MCP, json=remote(f"http://127.0.0.1:{loopback.port}/mcp"))
        assert_error_shape(r, 401)

    @pytest.mark.parametrize("server_type", ["http", "sse"])
    @pytest.mark.parametrize(("host", "kind"), FORMS, ids=FORM_IDS)
    async def test_create_is_refused(
        self,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        loopback: LoopbackService,
        host: str,
        kind: str,
        server_type: str,
    ) -> None:
        body = remote(target(host, loopback.port), server_type)
        r = await mclient.post(MCP, json=body, headers=alice.headers)
        assert_error_shape(r, 422, "mcp_url_not_allowed")
        listed = await mclient.get(MCP, params={"page_size": 100}, headers=alice.headers)
        assert body["name"] not in {s["name"] for s in listed.json()["items"]}
        assert_no_hits(loopback)

    @pytest.mark.parametrize(("host", "kind"), FORMS, ids=FORM_IDS)
    async def test_update_is_refused(
        self,
        app: object,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        loopback: LoopbackService,
        allowed_service: LoopbackService,
        host: str,
        kind: str,
    ) -> None:
        created = await mclient.post(MCP, json=remote(allowed_service.url + "mcp"), headers=alice.headers)
        assert created.status_code == 201, created.text
        server = created.json()
        r = await mclient.patch(
            f"{MCP}/{server['id']}",
            json={"config": {"url": target(host, loopback.port)}},
            headers=alice.headers,
        )
        assert_error_shape(r, 422, "mcp_url_not_allowed")
        stored = (await mclient.get(f"{MCP}/{server['id']}", headers=alice.headers)).json()
        assert stored["config"]["url"] == allowed_service.url + "mcp"
        assert_no_hits(loopback)
        # Webhook deliveries of earlier tests may still reach the shared allowed service; the MCP server may not.
        assert [req for req in allowed_service.requests if req[1].startswith("/mcp")] == []

    @pytest.mark.parametrize(("host", "kind"), FORMS, ids=FORM_IDS)
    async def test_import_lists_it_as_an_error_and_creates_nothing(
        self, mclient: httpx.AsyncClient, alice: UserAccount, loopback: LoopbackService, host: str, kind: str
    ) -> None:
        name = f"i{uuid.uuid4().hex[:10]}"
        document = {"mcpServers": {name: {"type": "http", "url": target(host, loopback.port)}}}
        r = await mclient.post(f"{MCP}/import", json=document, headers=alice.headers)
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["imported"] == [] and [e["server"] for e in result["errors"]] == [name], result
        assert "not allowed" in result["errors"][0]["error"] or "metadata" in result["errors"][0]["error"]
        assert_no_hits(loopback)


# --- MCP servers: health checks ----------------------------------------------------------------------------------


async def health_check(client: httpx.AsyncClient, user: UserAccount, server_id: str) -> dict[str, Any]:
    r = await client.post(f"{MCP}/{server_id}/health-check", headers=user.headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def create_server(client: httpx.AsyncClient, user: UserAccount, url: str, server_type: str) -> dict[str, Any]:
    r = await client.post(MCP, json=remote(url, server_type), headers=user.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


class TestMcpHealthCheck:
    @pytest.mark.parametrize("server_type", ["http", "sse"])
    async def test_an_allowlisted_server_is_healthy_through_the_pinned_connection(
        self, mclient: httpx.AsyncClient, alice: UserAccount, echo_servers: dict[str, int], server_type: str
    ) -> None:
        """The control: the same check does reach a server it is allowed to reach, over both transports."""
        server = await create_server(mclient, alice, echo_url(server_type, echo_servers[server_type]), server_type)
        result = await health_check(mclient, alice, server["id"])
        assert result["status"] == "healthy", result
        assert {t["name"] for t in result["tools"]} == {"echo", "add"}

    @pytest.mark.parametrize(("host", "kind"), FORMS, ids=FORM_IDS)
    async def test_a_stored_internal_url_is_refused_before_connecting(
        self,
        app: object,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        loopback: LoopbackService,
        host: str,
        kind: str,
    ) -> None:
        """A server registered while its host was allowlisted, checked after the allowlist changed."""
        with allowlisted(app, "mcp_allowed_hosts", bare(host)):
            server = await create_server(mclient, alice, target(host, loopback.port), "http")
        result = await health_check(mclient, alice, server["id"])
        assert result["status"] == "unhealthy" and result["tools"] == [], result
        assert "not allowed" in result["error"] or "metadata endpoint" in result["error"], result
        stored = (await mclient.get(f"{MCP}/{server['id']}", headers=alice.headers)).json()
        assert stored["health_status"] == "unhealthy"
        assert_no_hits(loopback)

    @pytest.mark.parametrize("server_type", ["http", "sse"])
    async def test_a_redirect_to_loopback_is_not_followed(
        self,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        redirector: LoopbackService,
        redirect_target: LoopbackService,
        server_type: str,
    ) -> None:
        before = len(redirector.requests)
        server = await create_server(mclient, alice, f"{redirector.url}mcp", server_type)
        result = await health_check(mclient, alice, server["id"])
        assert result["status"] == "unhealthy" and "redirect" in result["error"], result
        assert len(redirector.requests) > before  # the allowlisted host was asked, and answered 302
        assert_no_hits(redirect_target)

    @pytest.mark.parametrize("server_type", ["http", "sse"])
    async def test_dns_rebinding_after_the_check_cannot_reach_loopback(
        self,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        loopback: LoopbackService,
        offhost: OffHostConnects,
        server_type: str,
    ) -> None:
        """The name is public when checked and loopback when a connection by name would resolve it: the health
        check connects to the address it checked (refused by the off-host double), never to the listener."""
        with pytest.MonkeyPatch.context() as mp:
            resolver = RebindingResolver(mp, REBIND, at_check=PUBLIC, at_connect="127.0.0.1")
            server = await create_server(mclient, alice, f"http://{REBIND}:{loopback.port}/mcp", server_type)
            result = await health_check(mclient, alice, server["id"])
        assert_no_hits(loopback)
        assert result["status"] == "unhealthy" and result["error"] == "cannot connect to the server", result
        assert resolver.check_lookups >= 1 and resolver.connect_lookups == 0
        assert set(offhost.attempts) == {(PUBLIC, loopback.port)}
        offhost.attempts.clear()

    @pytest.mark.parametrize("server_type", ["http", "sse"])
    async def test_the_pinned_connection_keeps_the_name(
        self,
        app: object,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        echo_servers: dict[str, int],
        server_type: str,
    ) -> None:
        """An allowlisted name the system resolver cannot resolve: healthy only because the connection goes to
        the address the check looked up."""
        with pytest.MonkeyPatch.context() as mp, allowlisted(app, "mcp_allowed_hosts", PINNED):
            resolver = RebindingResolver(mp, PINNED, at_check=ALLOWED, at_connect=None)
            url = echo_url(server_type, echo_servers[server_type], host=PINNED)
            server = await create_server(mclient, alice, url, server_type)
            result = await health_check(mclient, alice, server["id"])
        assert resolver.connect_lookups == 0
        assert result["status"] == "healthy", result


class TestPinnedTransport:
    """The transport the health checks use, on its own."""

    async def test_another_origin_is_refused_without_a_connection(self, loopback: LoopbackService) -> None:
        transport = pinned_http.PinnedTransport(f"http://{ALLOWED}:{loopback.port}/mcp", ALLOWED)
        async with httpx.AsyncClient(transport=transport) as client:
            for url in (f"http://127.0.0.1:{loopback.port}/", f"https://{ALLOWED}:{loopback.port}/"):
                with pytest.raises(httpx.ConnectError, match=re.escape(f"only {ALLOWED!r}")):
                    await client.get(url)
        assert_no_hits(loopback)

    async def test_https_goes_to_the_address_with_the_name_in_host_and_sni(self) -> None:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:  # test double for the real connection
            seen.append(request)
            return httpx.Response(204)

        transport = pinned_http.PinnedTransport("https://mcp.example.com:8443/mcp", PUBLIC)
        transport._inner = httpx.MockTransport(record)  # type: ignore[assignment]
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.post("https://MCP.example.com:8443/mcp?x=1", content=b"{}")
        assert r.status_code == 204 and r.request.url.host == "mcp.example.com"
        [sent] = seen
        assert str(sent.url) == f"https://{PUBLIC}:8443/mcp?x=1" and sent.content == b"{}"
        assert sent.headers["host"] == "mcp.example.com:8443"
        assert sent.extensions["sni_hostname"] == "mcp.example.com"


# --- webhooks ----------------------------------------------------------------------------------------------------


async def create_hook(client: httpx.AsyncClient, user: UserAccount, url: str) -> dict[str, Any]:
    r = await client.post(HOOKS, json={"url": url, "events": ["turn.completed"]}, headers=user.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def first_attempt(client: httpx.AsyncClient, user: UserAccount, hook_id: str, event_type: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await client.get(f"{HOOKS}/{hook_id}/deliveries", headers=user.headers)
        assert r.status_code == 200, r.text
        return next((d for d in r.json()["items"] if d["event_type"] == event_type and d["attempts"] >= 1), None)

    return await wait_until(check, timeout=30)


async def emit_event(app: object, user: UserAccount) -> None:
    """A real event through the outbox, as a finished turn writes it; the delivery loop sends it after commit."""
    async with app_state(app).db.transaction() as db:
        queued = await webhook_outbox.emit(db, uuid.UUID(user.id), "turn.completed", {"session_id": str(uuid.uuid4())})
    assert queued >= 1


async def send_and_wait(
    app: object, client: httpx.AsyncClient, user: UserAccount, hook: dict[str, Any], how: str
) -> dict[str, Any]:
    if how == "test":
        r = await client.post(f"{HOOKS}/{hook['id']}/test", headers=user.headers)
        assert r.status_code == 202, r.text
        return await first_attempt(client, user, hook["id"], "webhook.test")
    await emit_event(app, user)
    return await first_attempt(client, user, hook["id"], "turn.completed")


@pytest.fixture
async def hook_owner(app: object, mclient: httpx.AsyncClient) -> AsyncIterator[UserAccount]:
    """A user of its own per delivery test, so a real event reaches exactly that test's webhook. Its webhooks go
    with the test, so no retry of theirs runs into a later one."""
    user = await Users(app, mclient).create()
    yield user
    for hook in (await mclient.get(HOOKS, headers=user.headers)).json()["items"]:
        assert (await mclient.delete(f"{HOOKS}/{hook['id']}", headers=user.headers)).status_code == 204


class TestWebhooks:
    async def test_unauthenticated_is_401(self, mclient: httpx.AsyncClient, loopback: LoopbackService) -> None:
        r = await mclient.post(HOOKS, json={"url": loopback.url, "events": ["turn.completed"]})
        assert_error_shape(r, 401)

    @pytest.mark.parametrize(("host", "kind"), FORMS, ids=FORM_IDS)
    async def test_create_is_refused(
        self, mclient: httpx.AsyncClient, alice: UserAccount, loopback: LoopbackService, host: str, kind: str
    ) -> None:
        url = target(host, loopback.port, "hook")
        r = await mclient.post(HOOKS, json={"url": url, "events": ["turn.completed"]}, headers=alice.headers)
        assert_error_shape(r, 422, "url_not_allowed")
        listed = (await mclient.get(HOOKS, params={"page_size": 100}, headers=alice.headers)).json()["items"]
        assert url not in {h["url"] for h in listed}
        assert_no_hits(loopback)

    @pytest.mark.parametrize(("host", "kind"), FORMS, ids=FORM_IDS)
    async def test_update_is_refused(
        self,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        loopback: LoopbackService,
        allowed_service: LoopbackService,
        host: str,
        kind: str,
    ) -> None:
        hook = await create_hook(mclient, alice, allowed_service.url + "hook")
        r = await mclient.patch(
            f"{HOOKS}/{hook['id']}", json={"url": target(host, loopback.port, "hook")}, headers=alice.headers
        )
        assert_error_shape(r, 422, "url_not_allowed")
        assert (await mclient.get(f"{HOOKS}/{hook['id']}", headers=alice.headers)).json()["url"] == hook["url"]
        assert_no_hits(loopback)  # (the shared allowed service may still get earlier tests' deliveries)

    @pytest.mark.parametrize("how", ["test", "event"])
    @pytest.mark.parametrize(("host", "kind"), FORMS, ids=FORM_IDS)
    async def test_delivery_to_a_stored_internal_url_is_refused_before_connecting(
        self,
        app: object,
        mclient: httpx.AsyncClient,
        hook_owner: UserAccount,
        loopback: LoopbackService,
        host: str,
        kind: str,
        how: str,
    ) -> None:
        """A webhook registered while its host was allowlisted; the test endpoint and a real event both re-check
        the target at delivery."""
        with allowlisted(app, "webhook_allowed_hosts", bare(host)):
            hook = await create_hook(mclient, hook_owner, target(host, loopback.port, "hook"))
        d = await send_and_wait(app, mclient, hook_owner, hook, how)
        assert d["last_status_code"] is None and d["last_error"].startswith("target refused"), d
        assert d["status"] == "pending" and d["delivered_at"] is None
        assert_no_hits(loopback)

    @pytest.mark.parametrize("how", ["test", "event"])
    async def test_a_redirect_to_loopback_is_not_followed(
        self,
        app: object,
        mclient: httpx.AsyncClient,
        hook_owner: UserAccount,
        redirector: LoopbackService,
        redirect_target: LoopbackService,
        how: str,
    ) -> None:
        hook = await create_hook(mclient, hook_owner, f"{redirector.url}hook")
        before = len(redirector.requests)
        d = await send_and_wait(app, mclient, hook_owner, hook, how)
        assert d["last_status_code"] == 302 and "redirects are not followed" in d["last_error"], d
        assert len(redirector.requests) == before + 1
        assert_no_hits(redirect_target)

    @pytest.mark.parametrize("how", ["test", "event"])
    async def test_dns_rebinding_after_the_check_cannot_reach_loopback(
        self,
        app: object,
        mclient: httpx.AsyncClient,
        hook_owner: UserAccount,
        loopback: LoopbackService,
        offhost: OffHostConnects,
        how: str,
    ) -> None:
        with pytest.MonkeyPatch.context() as mp:
            resolver = RebindingResolver(mp, REBIND, at_check=PUBLIC, at_connect="127.0.0.1")
            hook = await create_hook(mclient, hook_owner, f"http://{REBIND}:{loopback.port}/hook")
            d = await send_and_wait(app, mclient, hook_owner, hook, how)
        assert_no_hits(loopback)
        assert d["last_status_code"] is None and "ConnectError" in d["last_error"], d
        assert resolver.check_lookups >= 2 and resolver.connect_lookups == 0  # at registration and at delivery
        assert set(offhost.attempts) == {(PUBLIC, loopback.port)}
        offhost.attempts.clear()

    async def test_the_pinned_connection_keeps_the_name_in_the_host_header(
        self, app: object, mclient: httpx.AsyncClient, hook_owner: UserAccount, allowed_service: LoopbackService
    ) -> None:
        with pytest.MonkeyPatch.context() as mp, allowlisted(app, "webhook_allowed_hosts", PINNED):
            resolver = RebindingResolver(mp, PINNED, at_check=ALLOWED, at_connect=None)
            hook = await create_hook(mclient, hook_owner, f"http://{PINNED}:{allowed_service.port}/hook")
            d = await send_and_wait(app, mclient, hook_owner, hook, "test")
        assert d["status"] == "succeeded" and d["last_status_code"] == 200, d
        assert resolver.connect_lookups == 0
        method, path, headers = allowed_service.requests[-1]
        assert (method, path, headers["host"]) == ("POST", "/hook", f"{PINNED}:{allowed_service.port}")


# --- the agent: its MCP transports and web tools (real SDK, real CLI, offline model) -----------------------------


def loopback_urls(port: int) -> list[str]:
    return [target(h, port, "x") for h in LOOPBACK_FORMS]


def all_urls(port: int) -> list[str]:
    return [target(h, port, "x") for h, _ in FORMS]


@pytest.mark.slow
class TestAgentMcpTransports:
    @pytest.mark.parametrize("server_type", ["http", "sse"])
    async def test_attached_servers_with_internal_urls_are_never_connected(
        self,
        app: object,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        loopback: LoopbackService,
        echo_servers: dict[str, int],
        server_type: str,
    ) -> None:
        """Servers registered while their hosts were allowlisted, attached to a session after the allowlist
        changed: the agent CLI is never told about them, while the allowed one beside them connects."""
        state = app_state(app)
        control = await create_server(mclient, alice, echo_url(server_type, echo_servers[server_type]), server_type)
        with allowlisted(app, "mcp_allowed_hosts", *(bare(h) for h, _ in FORMS)):
            internal = [await create_server(mclient, alice, target(h, loopback.port), server_type) for h, _ in FORMS]
        ids = [control["id"], *(s["id"] for s in internal)]
        # Before any agent runs: the check the turn runner makes drops every internal server, in-process and
        # without a connection (the CLI, another process, would connect to whatever it is given).
        async with state.db.transaction(readonly=True) as db:
            attached = await mcp_service.load_attached(db, state, uuid.UUID(alice.id), ids)
        assert list(await mcp_service.sdk_configs(state, attached)) == [control["name"]]

        sessions = SessionsApi(mclient, alice)
        s = await sessions.create(permission_mode="bypassPermissions", mcp_server_ids=ids)
        r = await sessions.query(s["id"], f'mcp {control["name"]} echo {{"text": "hi"}}')
        assert r.status_code == 200, r.text
        assert "echo: hi" in r.json()["result"]
        assert (await sessions.get(s["id"]))["mcp_status"] == [{"name": control["name"], "status": "connected"}]
        assert_no_hits(loopback)

    async def test_urls_in_mcp_tool_inputs_are_refused(
        self,
        app: object,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        loopback: LoopbackService,
        echo_servers: dict[str, int],
    ) -> None:
        """An MCP tool that fetches what it is given would reach these from the server's network: every form,
        in text, as a `url` and as a `host` field, is refused before the tool runs."""
        control = await create_server(mclient, alice, echo_url("http", echo_servers["http"]), "http")
        inputs = [{"text": f"read {u}"} for u in all_urls(loopback.port)]
        inputs += [{"text": "x", "host": bare(h)} for h in ("127.0.0.1", "::1", "169.254.169.254", "10.0.0.1")]
        for tool_input in inputs:
            assert await permissions.network_guard(f"mcp__{control['name']}__echo", tool_input) is not None, tool_input
        sessions = SessionsApi(mclient, alice)
        s = await sessions.create(permission_mode="bypassPermissions", mcp_server_ids=[control["id"]])
        message = "\n".join(f"mcp {control['name']} echo {json.dumps(i)}" for i in inputs)
        r = await sessions.query(s["id"], message)
        assert r.status_code == 200, r.text
        decisions = await sessions.items(s["id"], "permissions")
        assert [(p["tool_name"], p["decision"], p["decided_by"]) for p in decisions] == [
            (f"mcp__{control['name']}__echo", "deny", "sandbox")
        ] * len(inputs)
        assert all(c["status"] != "completed" for c in await sessions.items(s["id"], "tool-calls"))
        assert_no_hits(loopback)


@pytest.mark.slow
class TestAgentWebFetch:
    async def test_every_form_is_denied_before_the_tool_runs(
        self, mclient: httpx.AsyncClient, alice: UserAccount, loopback: LoopbackService
    ) -> None:
        urls = all_urls(loopback.port) + [u.replace("http://", "https://", 1) for u in loopback_urls(loopback.port)]
        for url in urls:
            assert await permissions.network_guard("WebFetch", {"url": url}) is not None, url
        sessions = SessionsApi(mclient, alice)
        s = await sessions.create(permission_mode="bypassPermissions")
        r = await sessions.query(s["id"], "\n".join(f"fetch {u}" for u in urls))
        assert r.status_code == 200, r.text
        decisions = await sessions.items(s["id"], "permissions")
        assert [(p["tool_name"], p["decision"], p["decided_by"]) for p in decisions] == [
            ("WebFetch", "deny", "sandbox")
        ] * len(urls)
        assert sorted(p["input_summary"]["url"] for p in decisions) == sorted(urls)
        assert loopback.marker not in json.dumps(r.json())
        assert_no_hits(loopback)


@pytest.mark.slow
class TestAgentMcpRedirect:
    @pytest.mark.parametrize("server_type", ["http", "sse"])
    async def test_a_redirect_from_an_allowed_server_to_loopback(
        self,
        mclient: httpx.AsyncClient,
        alice: UserAccount,
        redirector: LoopbackService,
        redirect_target: LoopbackService,
        server_type: str,
    ) -> None:
        """An MCP server that passes the check (here: allowlisted; on a real network: any public host) answers
        302 to a loopback service. The agent CLI only ever talks to the loopback MCP relay, which connects to the
        server itself, adds its configured headers and follows no redirect: the CLI gets a 502."""
        body = remote(f"{redirector.url}mcp", server_type)
        body["config"]["headers"] = {"X-Api-Key": "SECRET-KEY"}
        created = await mclient.post(MCP, json=body, headers=alice.headers)
        assert created.status_code == 201, created.text
        before = len(redirector.requests)
        sessions = SessionsApi(mclient, alice)
        s = await sessions.create(permission_mode="bypassPermissions", mcp_server_ids=[created.json()["id"]])
        r = await sessions.query(s["id"], "hello")
        assert r.status_code == 200, r.text
        reached = redirector.requests[before:]
        assert reached, "the relay did not connect to the attached server"
        assert all(headers.get("x-api-key") == "SECRET-KEY" for _, _, headers in reached)  # added by the relay
        assert (await sessions.get(s["id"]))["mcp_status"] != [{"name": body["name"], "status": "connected"}]
        assert_no_hits(redirect_target)
