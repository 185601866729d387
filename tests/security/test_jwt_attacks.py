"""JWT attacks (DESIGN security property 3, RFC 8725): every forged, misused or revoked token is a 401 in the error
shape, on a read and on a write, and the write changes nothing.

Tokens are forged with the server's own signing secret where the attack needs the right key (the test reads it
from the app's settings), so each case fails for the reason it names and not for a bad signature.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent_api.models import User
from tests.conftest import UserAccount, Users, app_state, assert_error_shape

# The guessed-key cases use short keys on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

API = "/api/v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def _secret(app: object) -> str:
    return app_state(app).jwt.secret  # type: ignore[no-any-return]


def _sign(app: object, claims: dict[str, Any], **changes: Any) -> str:
    """A token signed with the server's real key and algorithm, with `changes` applied (None removes a claim)."""
    payload = {**claims, **changes}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, _secret(app), algorithm="HS256")


def _unsigned(claims: dict[str, Any], alg: str) -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _tamper(token: str, **changes: Any) -> str:
    """The payload changed, the original header and signature kept."""
    header, payload, signature = token.split(".")
    claims = {**json.loads(base64.urlsafe_b64decode(payload + "==")), **changes}
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


# Each attack: (app, the victim's real tokens, an attacker's tokens) -> a token to present as the victim's access.
Attack = Callable[[object, UserAccount, UserAccount], str]

ATTACKS: dict[str, Attack] = {
    "alg none": lambda app, v, a: _unsigned(_claims(v.access_token), "none"),
    "alg None (capitalised)": lambda app, v, a: _unsigned(_claims(v.access_token), "None"),
    "alg none with the real signature kept": lambda app, v, a: (
        _unsigned(_claims(v.access_token), "none") + v.access_token.split(".")[2]
    ),
    "RS256 with an attacker's key": lambda app, v, a: jwt.encode(
        _claims(v.access_token), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256"
    ),
    "ES256 with an attacker's key": lambda app, v, a: jwt.encode(
        _claims(v.access_token), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"
    ),
    # HS/RS confusion: the server has no public key to abuse, so the HMAC family with guessable keys stands in.
    "HS256 with an empty key": lambda app, v, a: _hmac_with_empty_key(_claims(v.access_token)),
    "HS256 with a guessed key": lambda app, v, a: jwt.encode(_claims(v.access_token), "secret", algorithm="HS256"),
    "HS256 keyed with the issuer name": lambda app, v, a: jwt.encode(
        _claims(v.access_token), "agent-api", algorithm="HS256"
    ),
    "HS512 with the right key (not on the allowlist)": lambda app, v, a: jwt.encode(
        _claims(v.access_token), _secret(app), algorithm="HS512"
    ),
    "HS384 with the right key (not on the allowlist)": lambda app, v, a: jwt.encode(
        _claims(v.access_token), _secret(app), algorithm="HS384"
    ),
    "wrong audience": lambda app, v, a: _sign(app, _claims(v.access_token), aud="another-service"),
    "audience list without ours": lambda app, v, a: _sign(app, _claims(v.access_token), aud=["x", "y"]),
    "wrong issuer": lambda app, v, a: _sign(app, _claims(v.access_token), iss="https://evil.example"),
    "no audience": lambda app, v, a: _sign(app, _claims(v.access_token), aud=None),
    "no issuer": lambda app, v, a: _sign(app, _claims(v.access_token), iss=None),
    "no expiry": lambda app, v, a: _sign(app, _claims(v.access_token), exp=None),
    "no typ": lambda app, v, a: _sign(app, _claims(v.access_token), typ=None),
    "typ of another kind": lambda app, v, a: _sign(app, _claims(v.access_token), typ="id"),
    "not valid before next hour": lambda app, v, a: _sign(app, _claims(v.access_token), nbf=int(time.time()) + 3600),
    "expired": lambda app, v, a: _sign(
        app, _claims(v.access_token), iat=int(time.time()) - 7200, exp=int(time.time()) - 3600
    ),
    "refresh token used as access": lambda app, v, a: v.refresh_token,
    "refresh claims re-signed as is": lambda app, v, a: _sign(app, _claims(v.refresh_token)),
    "tampered subject, original signature": lambda app, v, a: _tamper(a.access_token, sub=v.id),
    "tampered expiry, original signature": lambda app, v, a: _tamper(
        v.access_token, exp=int(time.time()) + 10 * 365 * 86400
    ),
    "signature of another token": lambda app, v, a: ".".join(
        [*v.access_token.split(".")[:2], a.access_token.split(".")[2]]
    ),
    "right key, attacker's login family for the victim": lambda app, v, a: _sign(
        app, _claims(v.access_token), fam=_claims(a.access_token)["fam"]
    ),
    "right key, made-up login family": lambda app, v, a: _sign(app, _claims(v.access_token), fam=str(uuid.uuid4())),
    "right key, subject that is no user": lambda app, v, a: _sign(app, _claims(v.access_token), sub=str(uuid.uuid4())),
    "right key, subject not a UUID": lambda app, v, a: _sign(app, _claims(v.access_token), sub="admin"),
    "empty token": lambda app, v, a: "",
    "garbage": lambda app, v, a: "a.b.c",
    "three dots": lambda app, v, a: "...",
}


def _hmac_with_empty_key(claims: dict[str, Any]) -> str:
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(b"", f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


async def _templates(client: httpx.AsyncClient, reader: dict[str, str]) -> set[str]:
    r = await client.get(f"{API}/session-templates", params={"page_size": 100}, headers=reader)
    assert r.status_code == 200, r.text
    return {t["name"] for t in r.json()["items"]}


async def assert_refused(client: httpx.AsyncClient, token: str, reader: dict[str, str], label: str) -> None:
    """The token reads nothing and writes nothing (`reader`: valid headers of the user whose templates it would
    have written)."""
    headers = {"Authorization": f"Bearer {token}"}
    assert_error_shape(await client.get(f"{API}/auth/me", headers=headers), 401)
    name = f"forged {label}"[:100]
    r = await client.post(f"{API}/session-templates", json={"name": name}, headers=headers)
    assert_error_shape(r, 401)
    assert name not in await _templates(client, reader)


async def _api_key_headers(client: httpx.AsyncClient, user: UserAccount) -> dict[str, str]:
    """A credential of the user's that outlives logouts (API keys are revoked on their own)."""
    r = await client.post(f"{API}/auth/api-keys", json={"name": "reader"}, headers=user.headers)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


class TestForgedAndMisusedAccessTokens:
    @pytest.mark.parametrize("attack", sorted(ATTACKS))
    async def test_401_and_nothing_changes(
        self, app: object, client: httpx.AsyncClient, users: Users, attack: str
    ) -> None:
        victim, attacker = await users.create(), await users.create()
        token = ATTACKS[attack](app, victim, attacker)
        await assert_refused(client, token, victim.headers, attack)
        # The victim's real login still works: the attack revoked nothing either.
        assert (await client.get(f"{API}/auth/me", headers=victim.headers)).status_code == 200

    async def test_the_forgery_helper_makes_tokens_the_server_accepts(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        # Without this, every right-key case above could pass for a wrong reason.
        token = _sign(app, _claims(owner.access_token), jti="re-signed")
        r = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["id"] == owner.id


class TestRefreshTokens:
    async def test_an_access_token_is_not_a_refresh_token(self, client: httpx.AsyncClient, owner: UserAccount) -> None:
        r = await client.post(f"{API}/auth/refresh", json={"refresh_token": owner.access_token})
        assert_error_shape(r, 401, "invalid_token")
        # The login was not hurt: its real refresh token still rotates.
        r = await client.post(f"{API}/auth/refresh", json={"refresh_token": owner.refresh_token})
        assert r.status_code == 200, r.text

    @pytest.mark.parametrize(
        "attack",
        ["alg none", "HS512 with the right key (not on the allowlist)", "wrong audience", "expired", "tampered"],
    )
    async def test_forged_refresh_tokens(
        self, app: object, client: httpx.AsyncClient, users: Users, attack: str
    ) -> None:
        victim = await users.create()
        claims = _claims(victim.refresh_token)
        token = {
            "alg none": lambda: _unsigned(claims, "none"),
            "HS512 with the right key (not on the allowlist)": lambda: jwt.encode(
                claims, _secret(app), algorithm="HS512"
            ),
            "wrong audience": lambda: _sign(app, claims, aud="x"),
            "expired": lambda: _sign(app, claims, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
            "tampered": lambda: _tamper(victim.refresh_token, exp=int(time.time()) + 10 * 365 * 86400),
        }[attack]()
        assert_error_shape(await client.post(f"{API}/auth/refresh", json={"refresh_token": token}), 401)
        # Nothing was revoked or rotated by the attempt: the victim's own refresh token still works, once.
        r = await client.post(f"{API}/auth/refresh", json={"refresh_token": victim.refresh_token})
        assert r.status_code == 200, r.text


class TestTokensOfGoneOrDisabledUsers:
    async def test_a_deleted_users_tokens(self, app: object, client: httpx.AsyncClient, users: Users) -> None:
        gone = await users.create()
        async with app_state(app).db.transaction() as db:
            await db.delete(await db.get(User, uuid.UUID(gone.id)))
        assert_error_shape(await client.get(f"{API}/auth/me", headers=gone.headers), 401)
        r = await client.post(f"{API}/session-templates", json={"name": "ghost"}, headers=gone.headers)
        assert_error_shape(r, 401)
        assert_error_shape(await client.post(f"{API}/auth/refresh", json={"refresh_token": gone.refresh_token}), 401)

    async def test_a_disabled_users_tokens_and_api_keys(self, client: httpx.AsyncClient, users: Users) -> None:
        admin, user = await users.create(admin=True), await users.create()
        key = (await client.post(f"{API}/auth/api-keys", json={"name": "k"}, headers=user.headers)).json()["key"]
        r = await client.patch(f"{API}/admin/users/{user.id}", json={"is_active": False}, headers=admin.headers)
        assert r.status_code == 200, r.text
        for credential in (user.access_token, key):
            await assert_refused(client, credential, admin.headers, f"disabled {credential[:4]}")
        assert_error_shape(await client.post(f"{API}/auth/refresh", json={"refresh_token": user.refresh_token}), 401)
        # Disabling also ended the logins for good; the key, revoked by nobody, works again once re-enabled.
        await client.patch(f"{API}/admin/users/{user.id}", json={"is_active": True}, headers=admin.headers)
        assert_error_shape(await client.get(f"{API}/auth/me", headers=user.headers), 401)
        r = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["id"] == user.id


class TestRevokedLogins:
    async def test_logout_revokes_its_access_and_refresh_tokens(
        self, app: object, client: httpx.AsyncClient, users: Users
    ) -> None:
        user = await users.create()
        reader = await _api_key_headers(client, user)
        assert (await client.post(f"{API}/auth/logout", headers=user.headers)).status_code == 204
        await assert_refused(client, user.access_token, reader, "after logout")
        # Signed with the right key for that login, with a fresh jti: still revoked.
        await assert_refused(client, _sign(app, _claims(user.access_token), jti="fresh"), reader, "re-signed")
        r = await client.post(f"{API}/auth/refresh", json={"refresh_token": user.refresh_token})
        assert_error_shape(r, 401, "invalid_token")

    async def test_logout_all_revokes_every_login(self, app: object, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        r = await client.post(f"{API}/auth/login", json={"username": user.username, "password": user.password})
        second = r.json()
        reader = await _api_key_headers(client, user)
        assert (await client.post(f"{API}/auth/logout-all", headers=user.headers)).status_code == 204
        for token in (user.access_token, second["access_token"]):
            await assert_refused(client, token, reader, "after logout-all")
            await assert_refused(client, _sign(app, _claims(token), jti="fresh"), reader, "re-signed all")
        for refresh in (user.refresh_token, second["refresh_token"]):
            assert_error_shape(await client.post(f"{API}/auth/refresh", json={"refresh_token": refresh}), 401)
        # A new login works: logout-all revoked logins, not the account.
        r = await client.post(f"{API}/auth/login", json={"username": user.username, "password": user.password})
        assert r.status_code == 200

    async def test_a_reused_refresh_token_revokes_its_family(self, client: httpx.AsyncClient, users: Users) -> None:
        user = await users.create()
        reader = await _api_key_headers(client, user)
        rotated = await client.post(f"{API}/auth/refresh", json={"refresh_token": user.refresh_token})
        assert rotated.status_code == 200
        r = await client.post(f"{API}/auth/refresh", json={"refresh_token": user.refresh_token})
        assert_error_shape(r, 401, "token_reused")
        # The whole login is gone, the access token from the rotation included.
        await assert_refused(client, rotated.json()["access_token"], reader, "family revoked")
        await assert_refused(client, user.access_token, reader, "family revoked old")
