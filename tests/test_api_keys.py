"""API keys: created with the secret shown once, listed without it, accepted as bearer, revoked or expired at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from agent_api.models import ApiKey
from tests.conftest import Users, app_state, assert_error_shape

KEYS = "/api/v1/auth/api-keys"
ME = "/api/v1/auth/me"


class TestApiKeys:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        assert_error_shape(await client.post(KEYS, json={"name": "ci"}), 401)
        assert_error_shape(await client.get(KEYS), 401)

    async def test_create_use_list_revoke(self, app: object, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        r = await client.post(KEYS, json={"name": "ci pipeline"}, headers=user.headers)
        assert r.status_code == 201
        created = r.json()
        secret = created["key"]
        assert secret.startswith("aak_") and created["prefix"] == secret[: len(created["prefix"])]
        key_headers = {"Authorization": f"Bearer {secret}"}

        me = await client.get(ME, headers=key_headers)
        assert me.status_code == 200 and me.json()["id"] == user.id

        listed = (await client.get(KEYS, headers=user.headers)).json()
        assert listed["total"] == 1 and listed["items"][0]["id"] == created["id"]
        assert "key" not in listed["items"][0] and secret not in str(listed)

        async with app_state(app).db.transaction() as session:
            stored = (await session.scalars(select(ApiKey).where(ApiKey.id == uuid.UUID(created["id"])))).one()
            assert secret not in (stored.key_hash, stored.prefix)

        deadline = time.monotonic() + 10
        while True:
            items = (await client.get(KEYS, headers=user.headers)).json()["items"]
            if items[0]["last_used_at"] is not None:
                break
            assert time.monotonic() < deadline, "last_used_at was never recorded"
            await asyncio.sleep(0.05)

        assert (await client.delete(f"{KEYS}/{created['id']}", headers=user.headers)).status_code == 204
        assert_error_shape(await client.get(ME, headers=key_headers), 401, "invalid_token")
        listed = (await client.get(KEYS, headers=user.headers)).json()
        assert listed["items"][0]["revoked_at"] is not None

    async def test_another_users_key_is_404(self, client: httpx.AsyncClient, users: Users) -> None:
        owner, other = await users.create(), await users.create()
        key = (await client.post(KEYS, json={"name": "mine"}, headers=owner.headers)).json()
        assert_error_shape(await client.delete(f"{KEYS}/{key['id']}", headers=other.headers), 404, "not_found")
        assert (await client.get(KEYS, headers=other.headers)).json()["total"] == 0
        assert (await client.get(ME, headers={"Authorization": f"Bearer {key['key']}"})).status_code == 200

    async def test_expiry(self, app: object, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        assert_error_shape(await client.post(KEYS, json={"name": "x", "expires_at": past}, headers=user.headers), 422)
        assert (await client.get(KEYS, headers=user.headers)).json()["total"] == 0

        soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        key = (await client.post(KEYS, json={"name": "short", "expires_at": soon}, headers=user.headers)).json()
        key_headers = {"Authorization": f"Bearer {key['key']}"}
        assert (await client.get(ME, headers=key_headers)).status_code == 200
        async with app_state(app).db.transaction() as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == uuid.UUID(key["id"]))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert_error_shape(await client.get(ME, headers=key_headers), 401, "invalid_token")

    async def test_unknown_key_and_logout_with_a_key(self, client: httpx.AsyncClient, users: Users) -> None:
        assert_error_shape(await client.get(ME, headers={"Authorization": "Bearer aak_nope"}), 401)
        user = await users.create()
        key = (await client.post(KEYS, json={"name": "k"}, headers=user.headers)).json()
        r = await client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {key['key']}"})
        assert_error_shape(r, 400, "not_a_login")
        assert (await client.get(ME, headers={"Authorization": f"Bearer {key['key']}"})).status_code == 200

    async def test_malformed_id_and_bad_body(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        assert_error_shape(await client.delete(f"{KEYS}/not-a-uuid", headers=user.headers), 422)
        assert_error_shape(await client.post(KEYS, json={"name": ""}, headers=user.headers), 422)
        assert_error_shape(await client.post(KEYS, json={"name": "x" * 101}, headers=user.headers), 422)
