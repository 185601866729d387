"""Every error response has the fixed shape; request ids; body-size limit; nothing secret in the logs."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent_api.app import create_app
from tests.conftest import Users, assert_error_shape, make_client, make_settings

SMALL_LIMIT = 1024


async def _api_key_count(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    r = await client.get("/api/v1/auth/api-keys", headers=headers)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


@pytest.fixture(scope="module")
async def small_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    """A second app on the same database with a tiny body cap, so the limit is cheap to cross."""
    application = create_app(make_settings(tmp_path_factory.mktemp("small"), database_url, max_body_bytes=SMALL_LIMIT))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def small_client(small_app: object) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(small_app) as c:
        yield c


@pytest.fixture
def boom_app(database_url: str, tmp_path: Path) -> object:
    """A separate app with a route that raises something nobody handles."""
    application = create_app(make_settings(tmp_path, database_url))

    @application.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom: internal detail")

    return application


def _boom_client(application: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _server_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # httpx logs the URL it requests on the client side; only the server's own records matter here.
    return [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]


def _record_text(record: logging.LogRecord) -> str:
    text = record.getMessage() + " " + " ".join(f"{k}={v!r}" for k, v in record.__dict__.items())
    if record.exc_info and record.exc_info[1] is not None:
        text += " " + logging.Formatter().formatException(record.exc_info)
    return text


class TestFrameworkErrors:
    async def test_missing_token_is_401(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/v1/auth/me")
        assert_error_shape(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].lower().startswith("bearer")

    async def test_bad_token_is_401(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not-a-token"})
        assert_error_shape(r, 401)

    async def test_unknown_route_is_404(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/v1/no-such-thing")
        assert_error_shape(r, 404, "not_found")

    async def test_wrong_method_is_405(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/v1/auth/login")
        assert_error_shape(r, 405, "method_not_allowed")
        assert "POST" in r.headers["allow"]

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/v1/auth/refresh", content=b"{bad", headers={"Content-Type": "application/json"})
        body = assert_error_shape(r, 422, "validation_error")
        details = body["error"]["details"]  # type: ignore[index]
        assert details and details[0]["type"] == "json_invalid"

    async def test_malformed_json_on_login_is_422(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/v1/auth/login", content=b"{bad", headers={"Content-Type": "application/json"})
        assert_error_shape(r, 422, "validation_error")

    @pytest.mark.parametrize("payload", [{}, {"refresh_token": 5}, {"refresh_token": ""}, []])
    async def test_schema_violation_is_422(self, client: httpx.AsyncClient, payload: object) -> None:
        r = await client.post("/api/v1/auth/refresh", json=payload)
        body = assert_error_shape(r, 422, "validation_error")
        details = body["error"]["details"]  # type: ignore[index]
        assert isinstance(details, list) and details
        assert all(set(d) == {"loc", "msg", "type"} for d in details)
        assert details[0]["loc"][0] == "body"

    async def test_validation_error_does_not_echo_the_input(self, client: httpx.AsyncClient) -> None:
        secret = "hunter2-super-secret-value"
        r = await client.post("/api/v1/auth/login", json={"password": secret})
        assert_error_shape(r, 422, "validation_error")
        assert secret not in r.text


class TestBodySizeLimit:
    async def test_oversized_body_with_content_length_is_413(
        self, small_client: httpx.AsyncClient, users: Users
    ) -> None:
        account = await users.create()
        before = await _api_key_count(small_client, account.headers)
        # Valid apart from its size (unknown fields are ignored), so only the cap stands in the way.
        r = await small_client.post(
            "/api/v1/auth/api-keys",
            json={"name": "big-key", "padding": "p" * SMALL_LIMIT},
            headers=account.headers,
        )
        assert int(r.request.headers["content-length"]) > SMALL_LIMIT
        body = assert_error_shape(r, 413, "payload_too_large")
        assert body["error"]["details"] == {"max_bytes": SMALL_LIMIT}  # type: ignore[index]
        assert await _api_key_count(small_client, account.headers) == before

    async def test_oversized_chunked_body_is_413(self, small_client: httpx.AsyncClient, users: Users) -> None:
        account = await users.create()
        before = await _api_key_count(small_client, account.headers)

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"name": "big-key", "padding": "'
            for _ in range(8):
                yield b"p" * 200
            yield b'"}'

        r = await small_client.post(
            "/api/v1/auth/api-keys",
            content=chunks(),
            headers={**account.headers, "Content-Type": "application/json"},
        )
        assert "content-length" not in r.request.headers
        assert_error_shape(r, 413, "payload_too_large")
        assert await _api_key_count(small_client, account.headers) == before

    async def test_chunked_body_under_the_limit_reaches_the_route(
        self, small_client: httpx.AsyncClient, users: Users
    ) -> None:
        account = await users.create()
        before = await _api_key_count(small_client, account.headers)

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"name": '
            yield b'"chunked-key"}'

        r = await small_client.post(
            "/api/v1/auth/api-keys",
            content=chunks(),
            headers={**account.headers, "Content-Type": "application/json"},
        )
        assert "content-length" not in r.request.headers
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "chunked-key"
        assert await _api_key_count(small_client, account.headers) == before + 1

    async def test_body_exactly_at_the_limit_is_accepted(self, small_client: httpx.AsyncClient) -> None:
        prefix, suffix = b'{"refresh_token": "', b'"}'
        body = prefix + b"t" * (SMALL_LIMIT - len(prefix) - len(suffix)) + suffix
        assert len(body) == SMALL_LIMIT
        r = await small_client.post("/api/v1/auth/refresh", content=body, headers={"Content-Type": "application/json"})
        assert_error_shape(r, 401)  # reached the route: a bad token, not a too-large body
        r = await small_client.post(
            "/api/v1/auth/refresh", content=body + b" ", headers={"Content-Type": "application/json"}
        )
        assert_error_shape(r, 413, "payload_too_large")


class TestUnhandledError:
    async def test_500_has_the_shape_and_a_logged_request_id(
        self, boom_app: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO):
            async with _boom_client(boom_app) as c:
                r = await c.get("/boom")
        body = assert_error_shape(r, 500, "internal_error")
        assert "kaboom" not in r.text
        request_id = body["error"]["request_id"]  # type: ignore[index]
        assert request_id
        logged = [
            rec
            for rec in caplog.records
            if rec.levelno >= logging.ERROR and getattr(rec, "request_id", None) == request_id
        ]
        assert logged, [(rec.name, rec.getMessage()) for rec in caplog.records]
        assert any(
            rec.exc_info and isinstance(rec.exc_info[1], RuntimeError) and "kaboom" in str(rec.exc_info[1])
            for rec in logged
        )

    async def test_500_is_in_the_access_log(self, boom_app: object, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.INFO, logger="agent_api.access"):
            async with _boom_client(boom_app) as c:
                r = await c.get("/boom", headers={"X-Request-ID": "access-500"})
        assert r.status_code == 500
        access = [rec for rec in caplog.records if rec.name == "agent_api.access"]
        assert [(getattr(rec, "request_id", None), getattr(rec, "status", None)) for rec in access] == [
            ("access-500", 500)
        ]

    async def test_500_keeps_the_clients_request_id(self, boom_app: object) -> None:
        async with _boom_client(boom_app) as c:
            r = await c.get("/boom", headers={"X-Request-ID": "client-chosen-500"})
        body = assert_error_shape(r, 500, "internal_error")
        assert body["error"]["request_id"] == "client-chosen-500"  # type: ignore[index]

    async def test_app_keeps_serving_after_a_500(self, boom_app: object) -> None:
        async with _boom_client(boom_app) as c:
            assert (await c.get("/boom")).status_code == 500
            assert_error_shape(await c.get("/nowhere"), 404, "not_found")


class TestRequestId:
    @pytest.mark.parametrize("sent", ["abc-123", "req.42:retry_1", "A" * 128])
    async def test_valid_request_id_is_echoed(self, client: httpx.AsyncClient, sent: str) -> None:
        r = await client.get("/api/v1/no-such-thing", headers={"X-Request-ID": sent})
        assert r.headers["x-request-id"] == sent
        body = assert_error_shape(r, 404)
        assert body["error"]["request_id"] == sent  # type: ignore[index]

    @pytest.mark.parametrize("sent", ["has spaces in it", "x" * 500, "semi;colon", "new\tline"])
    async def test_invalid_request_id_is_replaced(self, client: httpx.AsyncClient, sent: str) -> None:
        r = await client.get("/api/v1/no-such-thing", headers={"X-Request-ID": sent})
        got = r.headers["x-request-id"]
        assert got != sent
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", got)
        body = assert_error_shape(r, 404)
        assert body["error"]["request_id"] == got  # type: ignore[index]

    async def test_generated_ids_differ(self, client: httpx.AsyncClient) -> None:
        ids = {(await client.get("/api/v1/monitoring/health")).headers["x-request-id"] for _ in range(3)}
        assert len(ids) == 3

    async def test_success_responses_carry_the_id(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/v1/monitoring/health", headers={"X-Request-ID": "ok-request"})
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "ok-request"


class TestLogsKeepQueryStringsOut:
    async def test_access_log_has_no_query_string(
        self, client: httpx.AsyncClient, app: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.DEBUG):
            r = await client.get("/api/v1/monitoring/health?token=secret123")
            assert r.status_code == 200
            r = await client.get("/api/v1/no-such-thing?token=secret123&x=1")
            assert r.status_code == 404
        access = [rec for rec in caplog.records if rec.name == "agent_api.access"]
        paths = {getattr(rec, "path", None) for rec in access}
        # The log lines were captured at all, so their absence of the secret means something.
        assert {"/api/v1/monitoring/health", "/api/v1/no-such-thing"} <= paths, paths
        assert all(getattr(rec, "status", None) in (200, 404) for rec in access)
        leaking = [_record_text(rec) for rec in _server_records(caplog) if "secret123" in _record_text(rec)]
        assert leaking == []

    async def test_error_log_has_no_query_string(self, boom_app: object, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.DEBUG):
            async with _boom_client(boom_app) as c:
                r = await c.get("/boom?token=secret123")
        assert r.status_code == 500
        records = _server_records(caplog)
        assert any(rec.levelno >= logging.ERROR for rec in records)
        assert [_record_text(rec) for rec in records if "secret123" in _record_text(rec)] == []
