"""Shared fixtures: a migrated database per backend, one app per test module, clients and users.

The database matrix runs SQLite always and PostgreSQL when AGENT_API_TEST_POSTGRES_URL is set
(a server URL such as postgresql+psycopg://postgres@127.0.0.1:5432/postgres). Each run creates
its own PostgreSQL database and drops it at the end.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import secrets
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.engine import make_url

from agent_api import migrate
from agent_api.app import create_app
from agent_api.auth import service as auth_service
from agent_api.config import Settings
from agent_api.state import AppState

POSTGRES_URL = os.environ.get("AGENT_API_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"]
TEST_SECRET = "test-secret-" + "x" * 60
T = TypeVar("T")


def _postgres_admin_conninfo(url: str) -> str:
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
        migrate.upgrade(url)
        yield url
        return
    if not POSTGRES_URL:
        pytest.skip("AGENT_API_TEST_POSTGRES_URL not set")
    import psycopg

    name = f"agent_api_test_{secrets.token_hex(6)}"
    admin = _postgres_admin_conninfo(POSTGRES_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = (
        make_url(POSTGRES_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    )
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "auto_migrate": False,
        "secret_key": TEST_SECRET,
        "log_format": "text",
        # Tests drive schedulers themselves, with their own clocks.
        "scheduler_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    application = create_app(make_settings(tmp_path_factory.mktemp("data"), database_url))
    async with application.router.lifespan_context(application):
        yield application


def app_state(application: object) -> AppState:
    return application.state.agent_api  # type: ignore[attr-defined, no-any-return]


def random_ip() -> str:
    # Each client gets its own address so per-address login limits never couple tests.
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def make_client(application: object, ip: str | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=(ip or random_ip(), 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as c:
        yield c


@dataclass
class UserAccount:
    id: str
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Users:
    """Creates users straight through the service and logs them in through the API."""

    def __init__(self, application: object, client: httpx.AsyncClient) -> None:
        self.app = application
        self.client = client

    async def create(self, *, admin: bool = False, password: str | None = None, login: bool = True) -> UserAccount:
        username = f"u{uuid.uuid4().hex[:12]}"
        email = f"{username}@example.com"
        password = password or secrets.token_urlsafe(12)
        async with app_state(self.app).db.transaction() as session:
            user = await auth_service.create_user(session, username, password, email, admin=admin)
        tokens = {"access_token": "", "refresh_token": ""}
        if login:
            r = await self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
            assert r.status_code == 200, r.text
            tokens = r.json()
        return UserAccount(str(user.id), username, email, password, tokens["access_token"], tokens["refresh_token"])


@pytest.fixture
def users(app: object, client: httpx.AsyncClient) -> Users:
    return Users(app, client)


def assert_error_shape(response: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert isinstance(error["message"], str) and error["message"]
    assert body["detail"] == error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, body
    return body


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {timeout}s (last value: {value!r})"
        await asyncio.sleep(interval)


class SessionsApi:
    """Thin helpers over the session routes for one user."""

    def __init__(self, client: httpx.AsyncClient, user: UserAccount) -> None:
        self.client = client
        self.user = user

    async def create(self, **body: Any) -> dict[str, Any]:
        r = await self.client.post("/api/v1/sessions", json=body, headers=self.user.headers)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def get(self, session_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/sessions/{session_id}", headers=self.user.headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def query(self, session_id: str, message: str, *, wait: bool = True, **extra: Any) -> httpx.Response:
        return await self.client.post(
            f"/api/v1/sessions/{session_id}/query",
            json={"message": message, "wait": wait, **extra},
            headers=self.user.headers,
            timeout=120,
        )

    async def items(self, session_id: str, what: str, **params: Any) -> list[dict[str, Any]]:
        r = await self.client.get(
            f"/api/v1/sessions/{session_id}/{what}", params={"page_size": 100, **params}, headers=self.user.headers
        )
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]

    async def wait_status(self, session_id: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            s = await self.get(session_id)
            return s if s["status"] in statuses else None

        return await wait_until(check, timeout)


@pytest.fixture
async def owner(users: Users) -> UserAccount:
    return await users.create()


@pytest.fixture
def sessions(client: httpx.AsyncClient, owner: UserAccount) -> SessionsApi:
    return SessionsApi(client, owner)


def tar_members(content: bytes) -> dict[str, bytes | None]:
    """A downloaded tar.gz as {name: file bytes, or None for directories and links}."""
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
            for m in tar.getmembers()
        }
