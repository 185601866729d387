"""`/monitoring/health*`: real probes, no auth, 503 with the failed check named when a dependency is down."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from agent_api.app import create_app
from agent_api.monitoring import health
from tests.conftest import app_state, assert_error_shape, make_client, make_settings

HEALTH = "/api/v1/monitoring/health"
CHECK_NAMES = ("database", "storage", "sdk")
UNREACHABLE = {
    "sqlite": "sqlite+aiosqlite:////nonexistent-dir/x/db.sqlite",
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:1/nope",
}


def _assert_check(check: dict[str, Any], status: str) -> None:
    assert check["status"] == status, check
    assert isinstance(check["latency_ms"], int | float) and check["latency_ms"] >= 0


class TestAllUp:
    async def test_overall_health_is_ok(self, client: httpx.AsyncClient) -> None:
        r = await client.get(HEALTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok"
        assert "error" not in body
        assert set(body["checks"]) == set(CHECK_NAMES)
        for name in CHECK_NAMES:
            _assert_check(body["checks"][name], "ok")

    async def test_no_auth_needed_even_with_a_bad_token(self, client: httpx.AsyncClient) -> None:
        for path in (HEALTH, *(f"{HEALTH}/{name}" for name in CHECK_NAMES)):
            r = await client.get(path, headers={"Authorization": "Bearer garbage"})
            assert r.status_code == 200, (path, r.text)

    async def test_database_does_a_real_round_trip(self, client: httpx.AsyncClient, app: object) -> None:
        engine = app_state(app).db.engine.sync_engine
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            r = await client.get(f"{HEALTH}/database")
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["check"] == "database"
        _assert_check(body, "ok")
        assert body["backend"] == app_state(app).db.engine.dialect.name
        assert any("SELECT 1" in s for s in statements), statements

    async def test_storage_reports_free_bytes(self, client: httpx.AsyncClient, app: object) -> None:
        r = await client.get(f"{HEALTH}/storage")
        assert r.status_code == 200, r.text
        body = r.json()
        _assert_check(body, "ok")
        assert body["writable"] is True
        assert body["free_bytes"] > 0
        assert body["total_bytes"] >= body["free_bytes"]
        data_dir = app_state(app).settings.data_dir
        assert abs(body["free_bytes"] - shutil.disk_usage(data_dir).free) < 1 << 30
        assert not list(data_dir.glob(".health-*")), "the probe file was left behind"

    async def test_sdk_reports_the_installed_version(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{HEALTH}/sdk")
        assert r.status_code == 200, r.text
        body = r.json()
        _assert_check(body, "ok")
        assert body["installed"] is True
        assert body["version"] == importlib.metadata.version("claude-agent-sdk")
        assert body["cli_present"] is True
        assert Path(body["cli_path"]).is_file()


@pytest.fixture(params=sorted(UNREACHABLE))
async def db_down_app(
    request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[object]:
    """An app whose database cannot be reached; it still starts (bootstrap failures are logged)."""
    settings = make_settings(
        tmp_path,
        UNREACHABLE[request.param],
        auto_migrate=False,
        admin_username="bootstrap-admin",
        admin_password="bootstrap-password",
    )
    application = create_app(settings)
    with caplog.at_level(logging.ERROR, logger="agent_api"):
        async with application.router.lifespan_context(application):
            # The bootstrap admin could not be created: the failure was logged, and start-up went on.
            assert any(
                r.name.startswith("agent_api") and r.exc_info and isinstance(r.exc_info[1], DBAPIError)
                for r in caplog.records
            ), caplog.text
            yield application


class TestDatabaseDown:
    async def test_overall_is_503_naming_the_database(self, db_down_app: object) -> None:
        async with make_client(db_down_app) as c:
            r = await c.get(HEALTH)
        body = assert_error_shape(r, 503, "service_unavailable")
        assert body["status"] == "down"
        checks: dict[str, Any] = body["checks"]  # type: ignore[assignment]
        _assert_check(checks["database"], "down")
        assert checks["database"]["error"]
        _assert_check(checks["storage"], "ok")
        assert body["error"]["details"] == ["database"]  # type: ignore[index]
        assert "database" in body["error"]["message"]  # type: ignore[index]

    async def test_database_endpoint_is_503(self, db_down_app: object) -> None:
        async with make_client(db_down_app) as c:
            r = await c.get(f"{HEALTH}/database")
        body = assert_error_shape(r, 503, "service_unavailable")
        assert body["status"] == "down"
        assert body["check"] == "database"
        assert body["error"]["details"] == ["database"]  # type: ignore[index]

    async def test_other_checks_still_answer(self, db_down_app: object) -> None:
        async with make_client(db_down_app) as c:
            for name in ("storage", "sdk"):
                r = await c.get(f"{HEALTH}/{name}")
                assert r.status_code == 200, r.text

    async def test_probe_is_live(self, tmp_path: Path) -> None:
        """Down while the database's directory is missing, ok as soon as it exists: nothing is cached."""
        db_dir = tmp_path / "later"
        application = create_app(make_settings(tmp_path / "data", f"sqlite+aiosqlite:///{db_dir / 'db.sqlite'}"))
        async with application.router.lifespan_context(application), make_client(application) as c:
            assert_error_shape(await c.get(f"{HEALTH}/database"), 503, "service_unavailable")
            db_dir.mkdir()
            r = await c.get(f"{HEALTH}/database")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "ok"


class TestStorageDown:
    @pytest.fixture
    async def storage_down_app(self, database_url: str, tmp_path: Path) -> AsyncIterator[object]:
        # The data dir exists at start-up; then its parent becomes a regular file (a lost mount, say),
        # so nothing can be written there any more. Running as root, chmod would not stop a write.
        blocker = tmp_path / "blocker"
        data_dir = blocker / "data"
        application = create_app(make_settings(data_dir, database_url))
        async with application.router.lifespan_context(application):
            shutil.rmtree(blocker)
            blocker.write_text("not a directory")
            yield application

    async def test_overall_is_503_naming_storage(self, storage_down_app: object) -> None:
        async with make_client(storage_down_app) as c:
            r = await c.get(HEALTH)
        body = assert_error_shape(r, 503, "service_unavailable")
        assert body["status"] == "down"
        checks: dict[str, Any] = body["checks"]  # type: ignore[assignment]
        _assert_check(checks["storage"], "down")
        assert checks["storage"]["writable"] is False
        _assert_check(checks["database"], "ok")
        assert body["error"]["details"] == ["storage"]  # type: ignore[index]

    async def test_storage_endpoint_is_503(self, storage_down_app: object) -> None:
        async with make_client(storage_down_app) as c:
            r = await c.get(f"{HEALTH}/storage")
        body = assert_error_shape(r, 503, "service_unavailable")
        assert body["check"] == "storage"
        assert body["status"] == "down"


class TestOverallStatus:
    def test_sdk_trouble_only_degrades(self) -> None:
        ok = {"status": "ok", "latency_ms": 1.0}
        assert health.overall_status({"database": ok, "storage": ok, "sdk": ok}) == "ok"
        degraded = {"status": "degraded", "latency_ms": 1.0}
        assert health.overall_status({"database": ok, "storage": ok, "sdk": degraded}) == "degraded"
        down = {"status": "down", "latency_ms": 1.0}
        assert health.overall_status({"database": ok, "storage": ok, "sdk": down}) == "degraded"
        assert health.overall_status({"database": down, "storage": ok, "sdk": ok}) == "down"
