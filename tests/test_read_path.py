"""The read path's cache of logins: a warm login reads nothing, and every way of ending a login ends it at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update

from agent_api.app import create_app
from agent_api.auth_cache import AuthCache, CachedLogin, detached_copy
from agent_api.models import User
from tests.conftest import (
    SessionsApi,
    UserAccount,
    Users,
    app_state,
    assert_error_shape,
    make_client,
    make_settings,
)

ME = "/api/v1/auth/me"
KEYS = "/api/v1/auth/api-keys"


@contextmanager
def statements(app: object) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = app_state(app).db.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def warm(app: object, client: httpx.AsyncClient, user: UserAccount, headers: dict[str, str]) -> None:
    """Authenticate until the login is cached (on PostgreSQL, once the invalidation listener is up)."""
    assert (await client.get(ME, headers=headers)).status_code == 200
    state = app_state(app)
    if state.auth_listener is not None:
        await asyncio.wait_for(state.auth_listener.listening.wait(), 30)
        assert (await client.get(ME, headers=headers)).status_code == 200
    assert state.auth_cache.holds(uuid.UUID(user.id))


async def admin_headers(users: Users) -> dict[str, str]:
    return (await users.create(admin=True)).headers


class TestWarmLogin:
    async def test_a_bad_token_is_401_with_the_cache_warm(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        await warm(app, client, owner, owner.headers)
        assert_error_shape(await client.get(ME, headers={"Authorization": "Bearer x.y.z"}), 401, "invalid_token")
        assert_error_shape(await client.get(ME), 401)

    async def test_reads_nothing_from_the_database(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        await warm(app, client, owner, owner.headers)
        with statements(app) as seen:
            r = await client.get(ME, headers=owner.headers)
        assert r.status_code == 200
        assert r.json()["id"] == owner.id
        assert seen == []

    async def test_a_list_reads_the_same_sessions_as_single_gets(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        created = [await sessions.create(name=f"s{i}", metadata={"n": i}) for i in range(3)]
        r = await client.get("/api/v1/sessions", params={"page_size": 2}, headers=sessions.user.headers)
        body = r.json()
        assert set(body) == {"items", "total", "page", "page_size", "total_pages"}
        assert (body["total"], body["page"], body["page_size"], body["total_pages"]) == (3, 1, 2, 2)
        newest = [await sessions.get(s["id"]) for s in reversed(created)][:2]
        # An agent starting in the background moves these between the two reads.
        moving = {"status", "updated_at", "started_at", "completed_at", "mcp_status", "error_message", "model"}
        assert [item.keys() for item in body["items"]] == [item.keys() for item in newest]
        assert [{k: v for k, v in item.items() if k not in moving} for item in body["items"]] == [
            {k: v for k, v in item.items() if k not in moving} for item in newest
        ]


class TestRevocationWithTheCacheWarm:
    async def test_logout(self, app: object, client: httpx.AsyncClient, owner: UserAccount) -> None:
        await warm(app, client, owner, owner.headers)
        assert (await client.post("/api/v1/auth/logout", headers=owner.headers)).status_code == 204
        assert_error_shape(await client.get(ME, headers=owner.headers), 401, "invalid_token")

    async def test_logout_all_ends_the_other_logins(self, app: object, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        other = await client.post("/api/v1/auth/login", json={"username": user.username, "password": user.password})
        other_headers = {"Authorization": f"Bearer {other.json()['access_token']}"}
        await warm(app, client, user, user.headers)
        await warm(app, client, user, other_headers)
        assert (await client.post("/api/v1/auth/logout-all", headers=user.headers)).status_code == 204
        assert_error_shape(await client.get(ME, headers=other_headers), 401, "invalid_token")

    async def test_a_disabled_user(self, app: object, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        await warm(app, client, user, user.headers)
        r = await client.patch(
            f"/api/v1/admin/users/{user.id}", json={"is_active": False}, headers=await admin_headers(users)
        )
        assert r.status_code == 200, r.text
        assert_error_shape(await client.get(ME, headers=user.headers), 401, "invalid_token")

    async def test_a_user_changed_straight_in_the_database(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        await warm(app, client, owner, owner.headers)
        async with app_state(app).db.transaction() as db:
            await db.execute(update(User).where(User.id == uuid.UUID(owner.id)).values(is_active=False))
        assert_error_shape(await client.get(ME, headers=owner.headers), 401, "invalid_token")

    async def test_a_password_reset(self, app: object, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        await warm(app, client, user, user.headers)
        r = await client.post(
            f"/api/v1/admin/users/{user.id}/reset-password", json={}, headers=await admin_headers(users)
        )
        assert r.status_code == 200, r.text
        assert_error_shape(await client.get(ME, headers=user.headers), 401, "invalid_token")

    async def test_refresh_token_reuse(self, app: object, client: httpx.AsyncClient, owner: UserAccount) -> None:
        await warm(app, client, owner, owner.headers)
        refresh = "/api/v1/auth/refresh"
        assert (await client.post(refresh, json={"refresh_token": owner.refresh_token})).status_code == 200
        reused = await client.post(refresh, json={"refresh_token": owner.refresh_token})
        assert_error_shape(reused, 401, "token_reused")
        assert_error_shape(await client.get(ME, headers=owner.headers), 401, "invalid_token")

    async def test_a_revoked_api_key(self, app: object, client: httpx.AsyncClient, owner: UserAccount) -> None:
        key = (await client.post(KEYS, json={"name": "k"}, headers=owner.headers)).json()
        key_headers = {"Authorization": f"Bearer {key['key']}"}
        await warm(app, client, owner, key_headers)
        assert (await client.delete(f"{KEYS}/{key['id']}", headers=owner.headers)).status_code == 204
        assert_error_shape(await client.get(ME, headers=key_headers), 401, "invalid_token")


class TestCache:
    def test_an_entry_read_before_an_invalidation_is_not_kept(self) -> None:
        cache = AuthCache()
        user = detached_copy(User(id=uuid.uuid4(), username="u", password_hash="x", role="user", is_active=True))
        generation = cache.generation
        cache.invalidate({user.id})  # a revocation commits while the read is under way
        cache.put("family:1", CachedLogin(user), generation)
        assert cache.get("family:1") is None
        cache.put("family:1", CachedLogin(user), cache.generation)
        assert cache.get("family:1") is not None

    def test_nothing_is_used_before_the_listener_is_up(self) -> None:
        cache = AuthCache(ready=False)
        user = detached_copy(User(id=uuid.uuid4(), username="u", password_hash="x", role="user", is_active=True))
        cache.put("family:1", CachedLogin(user), cache.generation)
        assert cache.get("family:1") is None


@pytest.fixture
async def second_app(app: object, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """Another process's application on the same database (PostgreSQL only: SQLite has one process)."""
    if database_url.startswith("sqlite"):
        pytest.skip("one process owns a SQLite database")
    application = create_app(make_settings(tmp_path_factory.mktemp("data2"), database_url))
    async with application.router.lifespan_context(application):
        yield application


class TestRevocationAcrossProcesses:
    async def test_a_logout_in_one_app_ends_the_login_in_the_other(
        self, app: object, second_app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        async with make_client(second_app) as other:
            await warm(second_app, other, owner, owner.headers)
            cache = app_state(second_app).auth_cache
            cache.changed = asyncio.Event()
            assert (await client.post("/api/v1/auth/logout", headers=owner.headers)).status_code == 204
            while cache.holds(uuid.UUID(owner.id)):
                await asyncio.wait_for(cache.changed.wait(), 30)
                cache.changed.clear()
            assert_error_shape(await other.get(ME, headers=owner.headers), 401, "invalid_token")
