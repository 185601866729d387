"""The refresh token as an HttpOnly cookie: set by login and refresh, read by a body-less refresh, cleared by logout;
two tabs refreshing at once with the same cookie both stay signed in, while a real reuse still revokes the login."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from http.cookies import Morsel, SimpleCookie

import httpx
import pytest
from sqlalchemy import text, update
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from agent_api.auth import service as auth_service
from agent_api.auth.cookies import REFRESH_COOKIE, REFRESH_COOKIE_GRACE_S
from agent_api.models import RefreshTokenFamily
from agent_api.models.base import utcnow
from agent_api.security import JwtCodec
from tests.conftest import (
    TEST_SECRET,
    UserAccount,
    Users,
    app_state,
    assert_error_shape,
    make_client,
    random_ip,
    wait_until,
)

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/auth/me"
PAIR_KEYS = {"access_token", "refresh_token", "token_type", "expires_in"}


def refresh_cookie(response: httpx.Response) -> Morsel[str] | None:
    """The Set-Cookie of the refresh cookie in a response, parsed, or None."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if REFRESH_COOKIE in jar:
            return jar[REFRESH_COOKIE]
    return None


def cookie_header(token: str) -> dict[str, str]:
    return {"Cookie": f"{REFRESH_COOKIE}={token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, user: UserAccount) -> httpx.Response:
    r = await client.post(LOGIN, json={"username": user.username, "password": user.password})
    assert r.status_code == 200, r.text
    return r


def family_of(token: str) -> uuid.UUID:
    return JwtCodec(TEST_SECRET, "agent-api", "agent-api").decode(token, "refresh").family_id


async def age_rotation(app: object, family_id: uuid.UUID, seconds: float) -> None:
    """Move the family's last rotation `seconds` into the past (instead of waiting for the grace to pass)."""
    async with app_state(app).db.transaction() as db:
        await db.execute(
            update(RefreshTokenFamily)
            .where(RefreshTokenFamily.id == family_id)
            .values(last_refreshed_at=utcnow() - timedelta(seconds=seconds))
        )


@pytest.fixture
async def jarless(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose cookie jar is never used: each request says which cookie it sends (a browser tab's)."""
    async with make_client(app) as c:
        yield c


@pytest.fixture
async def account(users: Users) -> UserAccount:
    return await users.create(login=False)


class TestLoginSetsTheCookie:
    async def test_attributes(self, app: object, client: httpx.AsyncClient, account: UserAccount) -> None:
        r = await login(client, account)
        cookie = refresh_cookie(r)
        assert cookie is not None
        assert cookie.value == r.json()["refresh_token"]
        assert cookie["httponly"] is True
        assert cookie["samesite"].lower() == "strict"
        assert cookie["path"] == "/api/v1/auth"
        assert cookie["max-age"] == str(app_state(app).settings.refresh_token_ttl_s)
        assert not cookie["secure"], "plain http: a Secure cookie would never come back"

    async def test_the_json_answer_is_unchanged(self, client: httpx.AsyncClient, account: UserAccount) -> None:
        body = (await login(client, account)).json()
        assert set(body) == PAIR_KEYS and body["token_type"] == "bearer"

    async def test_secure_over_https(self, app: object, account: UserAccount) -> None:
        transport = httpx.ASGITransport(app=app, client=(random_ip(), 40000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as tls:
            cookie = refresh_cookie(await login(tls, account))
        assert cookie is not None and cookie["secure"] is True

    async def test_secure_behind_a_tls_proxy(self, app: object, account: UserAccount) -> None:
        """As `agent-api serve` runs it: uvicorn's proxy-header handling, a trusted proxy saying https."""
        proxied = ProxyHeadersMiddleware(app, trusted_hosts="*")  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=proxied, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            body = {"username": account.username, "password": account.password}
            r = await client.post(LOGIN, json=body, headers={"X-Forwarded-Proto": "https"})
            assert r.status_code == 200, r.text
            assert refresh_cookie(r)["secure"] is True  # type: ignore[index]
            r = await client.post(LOGIN, json=body)
            assert not refresh_cookie(r)["secure"]  # type: ignore[index]

    async def test_a_failed_login_sets_no_cookie(self, client: httpx.AsyncClient, account: UserAccount) -> None:
        r = await client.post(LOGIN, json={"username": account.username, "password": "wrong-password"})
        assert_error_shape(r, 401, "invalid_credentials")
        assert refresh_cookie(r) is None

    async def test_the_browser_sends_it_to_the_auth_routes_only(
        self, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        await login(client, account)
        assert REFRESH_COOKIE in client.build_request("POST", REFRESH).headers.get("cookie", "")
        for path in ("/api/v1/sessions", "/api/v1/auth-other", "/", "/api/v1/reports/x/download"):
            assert REFRESH_COOKIE not in client.build_request("GET", path).headers.get("cookie", ""), path


class TestRefreshWithTheCookie:
    async def test_no_body_reads_the_cookie_and_rotates_it(
        self, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        first = (await login(client, account)).json()
        r = await client.post(REFRESH)  # the jar sends the cookie, as a browser does
        assert r.status_code == 200, r.text
        pair = r.json()
        assert set(pair) == PAIR_KEYS
        assert pair["refresh_token"] != first["refresh_token"]
        cookie = refresh_cookie(r)
        assert cookie is not None and cookie.value == pair["refresh_token"] and cookie["httponly"] is True
        assert (await client.get(ME, headers=bearer(pair["access_token"]))).json()["username"] == account.username
        again = await client.post(REFRESH, json={})  # an empty object reads the cookie too
        assert again.status_code == 200, again.text
        assert refresh_cookie(again).value == again.json()["refresh_token"] != pair["refresh_token"]  # type: ignore[union-attr]

    async def test_the_body_wins_over_the_cookie(
        self, jarless: httpx.AsyncClient, account: UserAccount, client: httpx.AsyncClient
    ) -> None:
        in_cookie = (await login(client, account)).json()["refresh_token"]
        in_body = (await login(client, account)).json()["refresh_token"]
        r = await jarless.post(REFRESH, json={"refresh_token": in_body}, headers=cookie_header(in_cookie))
        assert r.status_code == 200, r.text
        assert family_of(r.json()["refresh_token"]) == family_of(in_body)
        # The cookie's login was not touched: its token is still the current one.
        untouched = await jarless.post(REFRESH, headers=cookie_header(in_cookie))
        assert untouched.status_code == 200 and refresh_cookie(untouched) is not None

    async def test_neither_body_nor_cookie_is_422(self, jarless: httpx.AsyncClient) -> None:
        for kwargs in ({}, {"json": {}}, {"json": {"refresh_token": None}}):
            r = await jarless.post(REFRESH, **kwargs)  # type: ignore[arg-type]
            body = assert_error_shape(r, 422, "validation_error")
            assert body["error"]["details"][0]["loc"] == ["body", "refresh_token"]  # type: ignore[index]

    async def test_a_bad_cookie_is_401(self, jarless: httpx.AsyncClient) -> None:
        r = await jarless.post(REFRESH, headers=cookie_header("not-a-token"))
        assert_error_shape(r, 401, "invalid_token")
        assert refresh_cookie(r) is None


class TestTwoTabs:
    async def test_two_refreshes_at_the_same_moment_both_succeed_and_the_login_lives_on(
        self, jarless: httpx.AsyncClient, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        token = (await login(client, account)).json()["refresh_token"]
        one, two = await asyncio.gather(
            jarless.post(REFRESH, headers=cookie_header(token)),
            jarless.post(REFRESH, headers=cookie_header(token)),
        )
        assert one.status_code == 200, one.text
        assert two.status_code == 200, two.text
        # Exactly one of them rotated and set the new cookie; the other got an access token only.
        rotated = [r for r in (one, two) if refresh_cookie(r) is not None]
        assert len(rotated) == 1
        graced = two if rotated[0] is one else one
        assert graced.json()["refresh_token"] == token
        for r in (one, two):
            assert set(r.json()) == PAIR_KEYS
            assert (await jarless.get(ME, headers=bearer(r.json()["access_token"]))).status_code == 200
        # The family stays valid: the new cookie refreshes as usual.
        newest = refresh_cookie(rotated[0]).value  # type: ignore[union-attr]
        later = await jarless.post(REFRESH, headers=cookie_header(newest))
        assert later.status_code == 200, later.text

    async def test_the_just_rotated_cookie_gets_an_access_token_and_no_new_cookie(
        self, jarless: httpx.AsyncClient, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        token = (await login(client, account)).json()["refresh_token"]
        rotated = await jarless.post(REFRESH, headers=cookie_header(token))
        newer = rotated.json()["refresh_token"]
        late_tab = await jarless.post(REFRESH, headers=cookie_header(token))
        assert late_tab.status_code == 200, late_tab.text
        assert refresh_cookie(late_tab) is None
        assert late_tab.json()["refresh_token"] == token
        assert (await jarless.get(ME, headers=bearer(late_tab.json()["access_token"]))).status_code == 200
        # It did not rotate: the newer token is still the current one.
        assert (await jarless.post(REFRESH, headers=cookie_header(newer))).status_code == 200

    async def test_only_the_token_rotated_last_has_the_grace(
        self, jarless: httpx.AsyncClient, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        first = (await login(client, account)).json()["refresh_token"]
        second = (await jarless.post(REFRESH, headers=cookie_header(first))).json()["refresh_token"]
        third = (await jarless.post(REFRESH, headers=cookie_header(second))).json()
        r = await jarless.post(REFRESH, headers=cookie_header(first))
        assert_error_shape(r, 401, "token_reused")
        assert_error_shape(await jarless.get(ME, headers=bearer(third["access_token"])), 401)

    async def test_reuse_after_the_grace_revokes_the_login(
        self, app: object, jarless: httpx.AsyncClient, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        token = (await login(client, account)).json()["refresh_token"]
        newer = (await jarless.post(REFRESH, headers=cookie_header(token))).json()
        await age_rotation(app, family_of(token), REFRESH_COOKIE_GRACE_S + 1)
        r = await jarless.post(REFRESH, headers=cookie_header(token))
        assert_error_shape(r, 401, "token_reused")
        assert refresh_cookie(r) is None
        assert_error_shape(await jarless.post(REFRESH, headers=cookie_header(newer["refresh_token"])), 401)
        assert_error_shape(await jarless.get(ME, headers=bearer(newer["access_token"])), 401)

    async def test_just_inside_the_grace_still_works(
        self, app: object, jarless: httpx.AsyncClient, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        token = (await login(client, account)).json()["refresh_token"]
        await jarless.post(REFRESH, headers=cookie_header(token))
        await age_rotation(app, family_of(token), REFRESH_COOKIE_GRACE_S - 2)
        assert (await jarless.post(REFRESH, headers=cookie_header(token))).status_code == 200

    async def test_a_rotation_stamped_after_this_refresh_began_is_within_the_grace(
        self, app: object, jarless: httpx.AsyncClient, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        """The concurrent refresh that rotated may have taken its time after this one did (or on a server whose
        clock runs ahead): a rotation "in the future" is within the grace."""
        token = (await login(client, account)).json()["refresh_token"]
        await jarless.post(REFRESH, headers=cookie_header(token))
        await age_rotation(app, family_of(token), -2)
        assert (await jarless.post(REFRESH, headers=cookie_header(token))).status_code == 200

    async def test_a_reused_token_in_the_body_has_no_grace(
        self, jarless: httpx.AsyncClient, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        """Clients that send the body each hold their own token: for them a reuse is a reuse, as before."""
        token = (await login(client, account)).json()["refresh_token"]
        newer = (await jarless.post(REFRESH, json={"refresh_token": token})).json()
        r = await jarless.post(REFRESH, json={"refresh_token": token})
        assert_error_shape(r, 401, "token_reused")
        assert_error_shape(await jarless.get(ME, headers=bearer(newer["access_token"])), 401)

    async def test_a_revoked_login_has_no_grace(
        self, jarless: httpx.AsyncClient, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        token = (await login(client, account)).json()["refresh_token"]
        newer = (await jarless.post(REFRESH, headers=cookie_header(token))).json()
        assert (await jarless.post("/api/v1/auth/logout", headers=bearer(newer["access_token"]))).status_code == 204
        assert_error_shape(await jarless.post(REFRESH, headers=cookie_header(token)), 401, "invalid_token")


class TestRotationRace:
    async def test_the_refresh_that_loses_the_race_gets_the_grace_not_a_second_rotation(
        self, app: object, client: httpx.AsyncClient, account: UserAccount
    ) -> None:
        """The first refresh has rotated but not committed when the second reads the same token as current. The
        second must not rotate again (its cookie would then be stale) nor revoke: it waits, then gets the grace."""
        state = app_state(app)
        token = (await login(client, account)).json()["refresh_token"]

        async def second_refresh() -> auth_service.Refreshed:
            async with state.db.transaction() as db:
                return await auth_service.refresh(db, state, token, grace_s=REFRESH_COOKIE_GRACE_S)

        async with state.db.transaction() as db:
            first = await auth_service.refresh(db, state, token, grace_s=REFRESH_COOKIE_GRACE_S)
            second = asyncio.create_task(second_refresh())
            if not state.db.is_sqlite:
                # PostgreSQL: commit only once the second has read the old row and waits for this one's lock.
                await wait_until(lambda: _waiting_on_a_lock(app))
        lost = await second
        assert first.rotated and not lost.rotated
        assert lost.pair.refresh_token == token
        # The winner's token is the family's current one: it refreshes, and nothing was revoked.
        async with state.db.transaction() as db:
            assert (await auth_service.refresh(db, state, first.pair.refresh_token)).rotated


async def _waiting_on_a_lock(app: object) -> bool:
    async with app_state(app).db.transaction(readonly=True) as db:
        count = await db.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
    return bool(count)


class TestLogoutClearsTheCookie:
    @pytest.mark.parametrize("route", ["/api/v1/auth/logout", "/api/v1/auth/logout-all"])
    async def test_logout_clears_it(self, client: httpx.AsyncClient, account: UserAccount, route: str) -> None:
        pair = (await login(client, account)).json()
        assert client.cookies.get(REFRESH_COOKIE) == pair["refresh_token"]
        r = await client.post(route, headers=bearer(pair["access_token"]))
        assert r.status_code == 204, r.text
        cookie = refresh_cookie(r)
        assert cookie is not None
        assert cookie.value == "" and cookie["max-age"] == "0" and cookie["path"] == "/api/v1/auth"
        assert cookie["httponly"] is True and cookie["samesite"].lower() == "strict"
        assert client.cookies.get(REFRESH_COOKIE) is None
        assert_error_shape(await client.post(REFRESH), 422)  # no cookie left to refresh with
        assert_error_shape(await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]}), 401)
