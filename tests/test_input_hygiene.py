"""Input no database can store (NUL characters, NaN/Infinity) and timestamps without an offset: clear 4xx or UTC,
never a 500, on both backends."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import UserAccount, assert_error_shape

CREATES = [
    ("/api/v1/sessions", {"name": "a\u0000b"}),
    ("/api/v1/session-templates", {"name": "a\u0000b"}),
    ("/api/v1/tasks", {"name": "t", "prompt_template": "x\u0000y"}),
    ("/api/v1/auth/api-keys", {"name": "k\u0000"}),
]


class TestNul:
    @pytest.mark.parametrize(("path", "body"), CREATES, ids=[p for p, _ in CREATES])
    async def test_nul_in_a_body_is_422_and_stores_nothing(
        self, client: httpx.AsyncClient, owner: UserAccount, path: str, body: dict[str, object]
    ) -> None:
        before = await client.get(path, headers=owner.headers)
        assert_error_shape(await client.post(path, json=body, headers=owner.headers), 422, "invalid_characters")
        after = await client.get(path, headers=owner.headers)
        assert before.json() == after.json()

    async def test_an_escaped_backslash_before_u0000_is_ordinary_text(
        self, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        name = "literal \\u0000 in code"
        r = await client.post("/api/v1/session-templates", json={"name": name}, headers=owner.headers)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name

    @pytest.mark.parametrize(
        "url",
        ["/api/v1/tasks?search=a%00b", "/api/v1/tasks?tag=%00", "/api/v1/sessions?search=x%00"],
    )
    async def test_nul_in_the_query_is_400(self, client: httpx.AsyncClient, owner: UserAccount, url: str) -> None:
        assert_error_shape(await client.get(url, headers=owner.headers), 400, "invalid_characters")


class TestNonFiniteNumbers:
    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    async def test_nan_and_infinity_are_422(self, client: httpx.AsyncClient, owner: UserAccount, constant: str) -> None:
        content = '{"name": "t", "prompt_template": "p", "metadata": {"x": ' + constant + "}}"
        r = await client.post(
            "/api/v1/tasks", content=content, headers={**owner.headers, "content-type": "application/json"}
        )
        assert_error_shape(r, 422, "invalid_characters")
        assert constant.lstrip("-") in r.json()["error"]["message"]

    async def test_the_words_inside_strings_are_fine(self, client: httpx.AsyncClient, owner: UserAccount) -> None:
        r = await client.post(
            "/api/v1/tasks", json={"name": "NaN and Infinity", "prompt_template": "p"}, headers=owner.headers
        )
        assert r.status_code == 201, r.text


class TestTimestampsWithoutOffset:
    @pytest.mark.parametrize(
        "url",
        [
            "/api/v1/sessions?created_after=2024-01-01T00:00:00",
            "/api/v1/reports?created_after=2024-01-01T00:00:00&created_before=2100-01-01",
        ],
    )
    async def test_are_taken_as_utc(self, client: httpx.AsyncClient, owner: UserAccount, url: str) -> None:
        r = await client.get(url, headers=owner.headers)
        assert r.status_code == 200, r.text
        assert r.json()["total"] >= 0

    async def test_api_key_expiry_without_offset(self, client: httpx.AsyncClient, owner: UserAccount) -> None:
        r = await client.post(
            "/api/v1/auth/api-keys", json={"name": "k", "expires_at": "2100-01-01T00:00:00"}, headers=owner.headers
        )
        assert r.status_code == 201, r.text
        assert r.json()["expires_at"].startswith("2100-01-01T00:00:00")


class TestOutOfRange:
    @pytest.mark.parametrize(
        "url",
        [
            "/api/v1/sessions?created_after=0001-01-01T00:00:00%2B05:00",
            "/api/v1/sessions?created_before=9999-12-31T23:59:59-05:00",
            "/api/v1/monitoring/costs/user/{me}?start=0001-01-01T00:00:00%2B05:00",
            "/api/v1/monitoring/costs/user/{me}?start=2020-01-01&end=9999-12-31T23:59:59-05:00",
        ],
    )
    async def test_dates_that_cannot_become_utc_are_422(
        self, client: httpx.AsyncClient, owner: UserAccount, url: str
    ) -> None:
        r = await client.get(url.format(me=owner.id), headers=owner.headers)
        assert_error_shape(r, 422)
