"""Migrations from empty on both backends, models == migrations, round trips, WAL and concurrent writers."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select
from sqlalchemy.engine import make_url

from agent_api import migrate
from agent_api.app import create_app
from agent_api.db import Database
from agent_api.models import Base, User
from tests.conftest import app_state, make_settings

POSTGRES_URL = os.environ.get("AGENT_API_TEST_POSTGRES_URL")
TABLES = {"users", "refresh_token_families", "api_keys"}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a brand-new, empty database (a fresh file, or a fresh PostgreSQL database)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("AGENT_API_TEST_POSTGRES_URL not set")
    import psycopg

    name = f"agent_api_migr_{secrets.token_hex(6)}"
    admin = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(POSTGRES_URL)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _head(url: str) -> str:
    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    heads = script.get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def _tables_and_revision(url: str) -> tuple[set[str], str | None]:
    engine = create_engine(migrate.sync_url(url))
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return tables, revision


def _model_diff(url: str) -> list[object]:
    engine = create_engine(migrate.sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": migrate.compared_by_autogenerate}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


class TestUpgradeFromEmpty:
    def test_upgrade_creates_the_tables_at_head(self, empty_database: str) -> None:
        tables, revision = _tables_and_revision(empty_database)
        assert not tables & TABLES
        assert revision is None
        migrate.upgrade(empty_database)
        tables, revision = _tables_and_revision(empty_database)
        assert tables >= TABLES | {"alembic_version"}
        assert tables >= set(Base.metadata.tables)  # every model has its table
        assert revision == _head(empty_database)

    def test_models_match_the_migrations(self, empty_database: str) -> None:
        migrate.upgrade(empty_database)
        assert _model_diff(empty_database) == []

    def test_diff_is_detected_when_they_do_not_match(self, empty_database: str) -> None:
        """The comparison above can fail: with only one table present, the others show up as missing."""
        engine = create_engine(migrate.sync_url(empty_database))
        try:
            with engine.begin() as conn:
                Base.metadata.tables["users"].create(conn)  # only one of the tables, no alembic history
        finally:
            engine.dispose()
        diff = _model_diff(empty_database)
        added = {d[1].name for d in diff if isinstance(d, tuple) and d[0] == "add_table"}
        assert added == set(Base.metadata.tables) - {"users"}, diff

    def test_upgrade_is_idempotent(self, empty_database: str) -> None:
        migrate.upgrade(empty_database)
        migrate.upgrade(empty_database)
        assert _tables_and_revision(empty_database)[1] == _head(empty_database)

    def test_downgrade_to_base_and_upgrade_again(self, empty_database: str) -> None:
        migrate.upgrade(empty_database)
        command.downgrade(migrate.alembic_config(empty_database), "base")
        tables, revision = _tables_and_revision(empty_database)
        assert not tables & set(Base.metadata.tables), tables
        assert revision is None
        migrate.upgrade(empty_database)
        tables, revision = _tables_and_revision(empty_database)
        assert tables >= TABLES
        assert revision == _head(empty_database)
        assert _model_diff(empty_database) == []


class TestUpgradeWithoutAlembic:
    """At the head, `migrate.upgrade` answers from one query and never imports Alembic (see migrate.py)."""

    def test_the_head_read_from_the_files_is_alembics(self, empty_database: str) -> None:
        assert migrate.shipped_head() == _head(empty_database)

    def test_at_the_head_alembic_is_not_loaded(self, empty_database: str) -> None:
        migrate.upgrade(empty_database)
        code = (
            "import sys; from agent_api import migrate; migrate.upgrade(sys.argv[1]); print('alembic' in sys.modules)"
        )
        run = subprocess.run(
            [sys.executable, "-c", code, empty_database], capture_output=True, text=True, timeout=60, check=True
        )
        assert run.stdout.split() == ["False"], run.stderr

    def test_a_database_behind_the_head_is_upgraded(self, empty_database: str) -> None:
        command.upgrade(migrate.alembic_config(empty_database), "0011")
        assert migrate.database_revisions(empty_database) == {"0011"}
        migrate.upgrade(empty_database)
        assert migrate.database_revisions(empty_database) == {_head(empty_database)}
        assert _model_diff(empty_database) == []

    def test_an_empty_database_has_no_revision(self, empty_database: str) -> None:
        assert migrate.database_revisions(empty_database) == set()


class TestSqlite:
    async def test_wal_after_the_app_engine_connects(self, tmp_path: Path) -> None:
        path = tmp_path / "wal.db"
        url = f"sqlite+aiosqlite:///{path}"
        await asyncio.to_thread(migrate.upgrade, url)
        with sqlite3.connect(path) as plain:
            assert plain.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal"
        application = create_app(make_settings(tmp_path / "data", url, db_busy_timeout_ms=12_345))
        db = app_state(application).db
        try:
            async with db.engine.connect() as conn:
                assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one().lower() == "wal"
                assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one() == 12_345
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one() == 1
        finally:
            await db.dispose()
        # WAL is a property of the file: any later connection sees it too.
        with sqlite3.connect(path) as plain:
            assert plain.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"

    async def test_50_concurrent_writers(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
        db = Database(url)
        writers = 50

        async def write(i: int) -> None:
            async with db.transaction() as session:
                # Read first, then write: under a DEFERRED begin this lock upgrade is what fails at once.
                await session.scalar(select(func.count()).select_from(User))
                session.add(User(username=f"writer-{i:02d}", password_hash="x"))
                await session.flush()
                await asyncio.sleep(0)

        try:
            results = await asyncio.gather(*(write(i) for i in range(writers)), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert errors == []
            async with db.transaction(readonly=True) as session:
                names = set((await session.scalars(select(User.username))).all())
        finally:
            await db.dispose()
        assert names == {f"writer-{i:02d}" for i in range(writers)}
