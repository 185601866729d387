"""Console tests: a real `agent-api serve` (SQLite, the offline model) driven by Playwright in the system's Chromium.

`playwright install` cannot download browsers here, so Playwright launches Debian's `chromium`. Without one the
tests skip with a message, except in CI, where they must run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserType, Playwright, sync_playwright

AGENT_API = str(Path(sys.executable).with_name("agent-api"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.slow


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if CHROMIUM:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI must run the console tests, but no chromium is installed")
    skip = pytest.mark.skip(reason="no chromium on this machine (apt-get install chromium) for the console tests")
    for item in items:
        if "tests/console/" in str(item.fspath):
            item.add_marker(skip)


# Playwright's sync API marks an event loop as running in this thread for as long as it lives, and every asyncio
# test after it would then fail to start: the browser lives for this package only, not the whole session as
# pytest-playwright's own fixtures would have it.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    pw = sync_playwright().start()
    yield pw
    pw.stop()


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    return getattr(playwright, browser_name)  # type: ignore[no-any-return]


@pytest.fixture(scope="package")
def browser(browser_type: BrowserType, browser_type_launch_args: dict[str, Any]) -> Iterator[Browser]:
    launched = browser_type.launch(**browser_type_launch_args)
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def browser_context_args() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    # As root (CI) Chromium's own sandbox cannot start; the page under test is ours.
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--no-sandbox"]}


@dataclass
class Account:
    username: str
    password: str
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class ConsoleServer:
    url: str
    admin: Account
    data_dir: Path
    proc: subprocess.Popen[bytes]
    logs: Path
    receiver_url: str = ""

    def api(self, method: str, path: str, account: Account | None = None, **kwargs: Any) -> httpx.Response:
        headers = (account or self.admin).headers
        return httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=60, **kwargs)

    def new_user(self, *, admin: bool = False) -> Account:
        account = Account(f"u{secrets.token_hex(5)}", secrets.token_urlsafe(12))
        body = {"username": account.username, "password": account.password, "is_admin": admin}
        r = self.api("POST", "/admin/users", json=body)
        assert r.status_code == 201, r.text
        return login(self.url, account)


def login(url: str, account: Account) -> Account:
    r = httpx.post(f"{url}/api/v1/auth/login", json={"username": account.username, "password": account.password})
    assert r.status_code == 200, r.text
    account.token = r.json()["access_token"]
    return account


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    root = tmp_path_factory.mktemp("console")
    data_dir, logs = root / "data", root / "logs"
    logs.mkdir()
    (root / "home").mkdir()
    port = _free_port()
    admin = Account("admin", secrets.token_urlsafe(12))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_API_")}
    env.update(
        AGENT_API_DATA_DIR=str(data_dir),
        AGENT_API_ADMIN_USERNAME=admin.username,
        AGENT_API_ADMIN_PASSWORD=admin.password,
        AGENT_API_LOG_FORMAT="text",
        # Webhook tests deliver to a receiver on loopback (`receiver`).
        AGENT_API_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        # The agents' shells read no profile of the machine's user (whose tools print to every command).
        HOME=str(root / "home"),
    )
    with (logs / "out").open("wb") as out:
        proc = subprocess.Popen(
            [AGENT_API, "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root
        )
    url = f"http://127.0.0.1:{port}"
    server = ConsoleServer(url, admin, data_dir, proc, logs)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (logs / "out").read_text()
            try:
                if httpx.get(f"{url}/api/v1/monitoring/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (logs / "out").read_text()
            time.sleep(0.1)
        login(url, admin)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each main screen is saved as a PNG (the run's temporary directory)."""
    return tmp_path_factory.mktemp("console-screens")


def sign_in(page: Any, console: ConsoleServer, account: Account) -> None:
    page.goto(console.url + "/")
    page.get_by_label("Username or email").fill(account.username)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").wait_for()


@pytest.fixture
def receiver(console: ConsoleServer) -> Iterator[list[bytes]]:
    """A webhook receiver on loopback: the bodies it was sent; it answers 204. Its URL is `console.receiver_url`."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers.get("content-length", "0"))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    console.receiver_url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield bodies
    finally:
        server.shutdown()
        server.server_close()
