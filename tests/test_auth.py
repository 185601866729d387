"""Login, refresh rotation, logout, /me, JWT hardening and the login rate limit."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import update

from agent_api import security
from agent_api.models import User
from tests.conftest import TEST_SECRET, Users, app_state, assert_error_shape, make_client

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/auth/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def set_active(app: object, user_id: str, active: bool) -> None:
    async with app_state(app).db.transaction() as session:
        await session.execute(update(User).where(User.id == uuid.UUID(user_id)).values(is_active=active))


class TestMe:
    async def test_without_token_is_401(self, client: httpx.AsyncClient) -> None:
        r = await client.get(ME)
        assert_error_shape(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"

    async def test_garbage_token_is_401(self, client: httpx.AsyncClient) -> None:
        assert_error_shape(await client.get(ME, headers=bearer("not-a-jwt")), 401, "invalid_token")

    async def test_returns_the_caller(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        r = await client.get(ME, headers=user.headers)
        assert r.status_code == 200
        body = r.json()
        assert body["id"] == user.id and body["username"] == user.username and body["email"] == user.email
        assert body["role"] == "user"
        assert body["created_at"].endswith("Z") or "+00:00" in body["created_at"]
        assert "password_hash" not in body


class TestLogin:
    async def test_by_username_and_by_email(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create(login=False)
        for body in ({"username": user.username}, {"email": user.email.upper()}, {"username": user.email}):
            r = await client.post(LOGIN, json={**body, "password": user.password})
            assert r.status_code == 200, (body, r.text)
            tokens = r.json()
            assert tokens["token_type"] == "bearer" and tokens["expires_in"] > 0
            assert (await client.get(ME, headers=bearer(tokens["access_token"]))).json()["id"] == user.id

    async def test_oauth2_password_form(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create(login=False)
        r = await client.post(LOGIN, data={"username": user.username, "password": user.password})
        assert r.status_code == 200
        assert (await client.get(ME, headers=bearer(r.json()["access_token"]))).status_code == 200

    async def test_missing_identifier_is_422(self, client: httpx.AsyncClient) -> None:
        assert_error_shape(await client.post(LOGIN, json={"password": "x"}), 422, "validation_error")

    async def test_wrong_password_and_unknown_user_look_the_same(
        self, client: httpx.AsyncClient, users: Users, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        user = await users.create(login=False)
        burned: list[str] = []
        real_burn = security.burn_password_check
        monkeypatch.setattr(security, "burn_password_check", lambda p: (burned.append(p), real_burn(p))[1])
        wrong = await client.post(LOGIN, json={"username": user.username, "password": "wrong-password"})
        unknown = await client.post(
            LOGIN, json={"username": "nobody-" + uuid.uuid4().hex, "password": "wrong-password"}
        )
        for r in (wrong, unknown):
            assert_error_shape(r, 401, "invalid_credentials")
        strip = lambda r: {**r.json(), "error": {**r.json()["error"], "request_id": None}}  # noqa: E731
        assert strip(wrong) == strip(unknown)
        # The unknown user still paid for a hash verification, so timing does not tell them apart.
        assert burned == ["wrong-password"]

    async def test_disabled_user_cannot_log_in_use_or_refresh(
        self, app: object, client: httpx.AsyncClient, users: Users
    ) -> None:
        user = await users.create()
        await set_active(app, user.id, False)
        r = await client.post(LOGIN, json={"username": user.username, "password": user.password})
        assert_error_shape(r, 401, "invalid_credentials")
        assert_error_shape(await client.get(ME, headers=user.headers), 401)
        assert_error_shape(await client.post(REFRESH, json={"refresh_token": user.refresh_token}), 401)
        await set_active(app, user.id, True)
        assert (await client.get(ME, headers=user.headers)).status_code == 200


class TestRefresh:
    async def test_rotates_the_pair(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        r = await client.post(REFRESH, json={"refresh_token": user.refresh_token})
        assert r.status_code == 200
        pair = r.json()
        assert pair["refresh_token"] != user.refresh_token
        assert (await client.get(ME, headers=bearer(pair["access_token"]))).json()["id"] == user.id
        again = await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
        assert again.status_code == 200

    async def test_reuse_of_a_rotated_token_revokes_the_family(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        newer = (await client.post(REFRESH, json={"refresh_token": user.refresh_token})).json()
        reuse = await client.post(REFRESH, json={"refresh_token": user.refresh_token})
        assert_error_shape(reuse, 401, "token_reused")
        # The legitimate holder's newer tokens die with the family.
        assert_error_shape(await client.post(REFRESH, json={"refresh_token": newer["refresh_token"]}), 401)
        assert_error_shape(await client.get(ME, headers=bearer(newer["access_token"])), 401)
        assert_error_shape(await client.get(ME, headers=user.headers), 401)

    async def test_other_logins_survive_a_reuse(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        other = (await client.post(LOGIN, json={"username": user.username, "password": user.password})).json()
        await client.post(REFRESH, json={"refresh_token": user.refresh_token})
        await client.post(REFRESH, json={"refresh_token": user.refresh_token})
        assert (await client.get(ME, headers=bearer(other["access_token"]))).status_code == 200

    async def test_access_and_refresh_tokens_are_not_interchangeable(
        self, client: httpx.AsyncClient, users: Users
    ) -> None:
        user = await users.create()
        assert_error_shape(await client.get(ME, headers=bearer(user.refresh_token)), 401, "invalid_token")
        assert_error_shape(await client.post(REFRESH, json={"refresh_token": user.access_token}), 401, "invalid_token")


def _forge(payload: dict[str, object], key: str = TEST_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


def _claims(user_id: str, family_id: str, **over: object) -> dict[str, object]:
    now = int(__import__("time").time())
    claims: dict[str, object] = {
        "typ": "access",
        "sub": user_id,
        "fam": family_id,
        "jti": "j",
        "iat": now,
        "exp": now + 600,
        "iss": "agent-api",
        "aud": "agent-api",
    }
    claims.update(over)
    return claims


class TestJwtHardening:
    async def _ids(self, user_token: str) -> tuple[str, str]:
        payload = jwt.decode(user_token, options={"verify_signature": False})
        return payload["sub"], payload["fam"]

    async def test_a_correctly_forged_token_is_accepted(self, client: httpx.AsyncClient, users: Users) -> None:
        # The control case: proves the rejections below are about the one thing each changes.
        user = await users.create()
        sub, fam = await self._ids(user.access_token)
        assert (await client.get(ME, headers=bearer(_forge(_claims(sub, fam))))).status_code == 200

    @pytest.mark.parametrize(
        "change",
        [
            {"exp": 1_000_000},
            {"typ": "refresh"},
            {"iss": "someone-else"},
            {"aud": "another-service"},
            {"exp": None},
        ],
        ids=["expired", "wrong-typ", "wrong-issuer", "wrong-audience", "no-exp"],
    )
    async def test_bad_claims_are_401(self, client: httpx.AsyncClient, users: Users, change: dict[str, object]) -> None:
        user = await users.create()
        sub, fam = await self._ids(user.access_token)
        claims = {k: v for k, v in _claims(sub, fam, **change).items() if v is not None}
        assert_error_shape(await client.get(ME, headers=bearer(_forge(claims))), 401, "invalid_token")

    async def test_other_key_alg_none_and_tampering_are_401(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        sub, fam = await self._ids(user.access_token)
        other_key = _forge(_claims(sub, fam), key="another-secret-" + "y" * 40)
        header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(_claims(sub, fam)).encode()).rstrip(b"=")
        alg_none = f"{header.decode()}.{body.decode()}."
        h, _payload, s = user.access_token.split(".")
        tampered_payload = base64.urlsafe_b64encode(json.dumps(_claims(sub, fam, sub=str(uuid.uuid4()))).encode())
        tampered = f"{h}.{tampered_payload.rstrip(b'=').decode()}.{s}"
        hs512 = _forge(_claims(sub, fam), alg="HS512")
        for token in (other_key, alg_none, tampered, hs512):
            assert_error_shape(await client.get(ME, headers=bearer(token)), 401, "invalid_token")


class TestVerifiedTokenCache:
    """A token's signature is checked once per process; what may change its answer is checked every time."""

    def test_a_verified_token_still_expires(self, monkeypatch: pytest.MonkeyPatch) -> None:
        codec = security.JwtCodec(TEST_SECRET, "agent-api", "agent-api")
        token, claims = codec.encode("access", uuid.uuid4(), uuid.uuid4(), ttl_s=60)
        decoded = codec.decode(token, "access")
        assert (decoded.user_id, decoded.jti) == (claims.user_id, claims.jti)
        assert codec.decode(token, "access") is decoded  # from the cache
        later = decoded.expires_at + timedelta(seconds=1)
        monkeypatch.setattr(security, "datetime", _clock_at(later))
        with pytest.raises(security.InvalidToken):
            codec.decode(token, "access")

    def test_the_expected_type_is_part_of_what_was_verified(self) -> None:
        codec = security.JwtCodec(TEST_SECRET, "agent-api", "agent-api")
        token, _ = codec.encode("access", uuid.uuid4(), uuid.uuid4(), ttl_s=60)
        codec.decode(token, "access")
        with pytest.raises(security.InvalidToken):
            codec.decode(token, "refresh")

    def test_a_token_under_another_key_is_not_taken_from_the_cache(self) -> None:
        token, _ = security.JwtCodec(TEST_SECRET, "agent-api", "agent-api").encode(
            "access", uuid.uuid4(), uuid.uuid4(), ttl_s=60
        )
        security.JwtCodec(TEST_SECRET, "agent-api", "agent-api").decode(token, "access")
        with pytest.raises(security.InvalidToken):
            security.JwtCodec("another-secret-" + "y" * 40, "agent-api", "agent-api").decode(token, "access")

    def test_the_cache_is_bounded(self) -> None:
        codec = security.JwtCodec(TEST_SECRET, "agent-api", "agent-api")
        for _ in range(security.VERIFIED_TOKENS_KEPT + 10):
            token, _ = codec.encode("access", uuid.uuid4(), uuid.uuid4(), ttl_s=60)
            codec.decode(token, "access")
        assert len(codec._verified) <= security.VERIFIED_TOKENS_KEPT


def _clock_at(moment: datetime) -> type[datetime]:
    """A `datetime` whose `now` is `moment`: the codec's only clock."""

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return moment

    return Clock


class TestLogout:
    async def test_logout_revokes_access_and_refresh_at_once(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        other = (await client.post(LOGIN, json={"username": user.username, "password": user.password})).json()
        assert_error_shape(await client.post("/api/v1/auth/logout"), 401)
        r = await client.post("/api/v1/auth/logout", headers=user.headers)
        assert r.status_code == 204
        assert_error_shape(await client.get(ME, headers=user.headers), 401)
        assert_error_shape(await client.post(REFRESH, json={"refresh_token": user.refresh_token}), 401)
        assert (await client.get(ME, headers=bearer(other["access_token"]))).status_code == 200

    async def test_logout_all_revokes_every_login(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        second = (await client.post(LOGIN, json={"username": user.username, "password": user.password})).json()
        bystander = await users.create()
        assert (await client.post("/api/v1/auth/logout-all", headers=user.headers)).status_code == 204
        for access in (user.access_token, second["access_token"]):
            assert_error_shape(await client.get(ME, headers=bearer(access)), 401)
        assert_error_shape(await client.post(REFRESH, json={"refresh_token": second["refresh_token"]}), 401)
        assert (await client.get(ME, headers=bystander.headers)).status_code == 200
        fresh = await client.post(LOGIN, json={"username": user.username, "password": user.password})
        assert fresh.status_code == 200


class TestLoginRateLimit:
    async def test_per_user_limit_trips_and_recovers(self, app: object, users: Users) -> None:
        limiter = app_state(app).login_limiter
        now = [1000.0]
        real_clock = limiter.window.clock
        limiter.window.clock = lambda: now[0]
        try:
            user = await users.create(login=False)
            async with make_client(app) as c:
                for _ in range(limiter.per_user):
                    r = await c.post(LOGIN, json={"username": user.username, "password": "wrong-password"})
                    assert r.status_code == 401
                blocked = await c.post(LOGIN, json={"username": user.username, "password": user.password})
                assert_error_shape(blocked, 429, "rate_limited")
                assert 0 < int(blocked.headers["retry-after"]) <= limiter.window.window_s + 1
            # Another address does not get around a per-user limit.
            async with make_client(app) as c2:
                r = await c2.post(LOGIN, json={"username": user.username, "password": user.password})
                assert r.status_code == 429
            now[0] += limiter.window.window_s + 1
            async with make_client(app) as c3:
                r = await c3.post(LOGIN, json={"username": user.username, "password": user.password})
                assert r.status_code == 200
        finally:
            limiter.window.clock = real_clock

    async def test_per_address_limit(self, app: object) -> None:
        limiter = app_state(app).login_limiter
        saved = limiter.per_ip
        limiter.per_ip = 3
        try:
            async with make_client(app) as c:
                for i in range(3):
                    r = await c.post(LOGIN, json={"username": f"ghost{i}-{uuid.uuid4().hex}", "password": "x"})
                    assert r.status_code == 401
                r = await c.post(LOGIN, json={"username": f"ghost-{uuid.uuid4().hex}", "password": "x"})
                assert_error_shape(r, 429, "rate_limited")
        finally:
            limiter.per_ip = saved
