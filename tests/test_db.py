"""SQLite reads on the event loop's thread (`db.py`): a read transaction's statements run inline unless they
outgrow their step budget, writes never do, and inline reads neither wait for a writer nor see its uncommitted
rows. Each statement reports the thread it ran on through a SQL function."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from agent_api import db as db_module
from agent_api.db import Database

ROWS = 20_000


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")

    @event.listens_for(database.engine.sync_engine, "connect")
    def _thread_function(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.create_function("tid", 0, threading.get_ident)

    async with database.transaction() as s:
        await s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        await s.execute(
            text(
                "INSERT INTO t (v) SELECT printf('row %d', x) FROM "
                f"(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {ROWS}) SELECT x FROM c)"
            )
        )
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_small_read_runs_on_the_event_loops_thread(database: Database) -> None:
    async with database.transaction(readonly=True) as s:
        v, ran_on = (await s.execute(text("SELECT v, tid() FROM t WHERE id = 7"))).one()
    assert v == "row 7"
    assert ran_on == threading.get_ident()


async def test_a_read_over_its_budget_runs_again_on_the_drivers_thread(database: Database) -> None:
    async with database.transaction(readonly=True) as s:
        total, ran_on = (await s.execute(text("SELECT sum(length(v)), tid() FROM t"))).one()
        # the transaction goes on inline afterwards
        _, next_ran_on = (await s.execute(text("SELECT v, tid() FROM t WHERE id = 1"))).one()
    assert total == sum(len(f"row {i}") for i in range(1, ROWS + 1))
    assert ran_on != threading.get_ident()
    assert next_ran_on == threading.get_ident()


async def test_writes_never_run_inline(database: Database) -> None:
    async with database.transaction() as s:
        (ran_on,) = (await s.execute(text("SELECT tid()"))).one()
        await s.execute(text("INSERT INTO t (v) VALUES ('written')"))
    assert ran_on != threading.get_ident()
    async with database.transaction(readonly=True) as s:
        assert (await s.execute(text("SELECT count(*) FROM t WHERE v = 'written'"))).scalar_one() == 1


async def test_a_read_transaction_that_writes_goes_to_the_drivers_thread_from_then_on(database: Database) -> None:
    async with database.transaction(readonly=True) as s:
        (before,) = (await s.execute(text("SELECT tid()"))).one()
        await s.execute(text("UPDATE t SET v = 'changed' WHERE id = 3"))
        (after,) = (await s.execute(text("SELECT tid()"))).one()
    assert before == threading.get_ident()
    assert after != threading.get_ident()
    async with database.transaction(readonly=True) as s:
        assert (await s.execute(text("SELECT v FROM t WHERE id = 3"))).scalar_one() == "changed"


async def test_an_inline_read_neither_waits_for_a_writer_nor_sees_its_rows(database: Database) -> None:
    writer = await database.begin_session()
    try:
        await writer.execute(text("UPDATE t SET v = 'uncommitted' WHERE id = 5"))  # holds SQLite's write lock
        async with database.transaction(readonly=True) as s:
            v, ran_on = (await s.execute(text("SELECT v, tid() FROM t WHERE id = 5"))).one()
        assert (v, ran_on) == ("row 5", threading.get_ident())
        await writer.commit()
    finally:
        await writer.close()
    async with database.transaction(readonly=True) as s:
        assert (await s.execute(text("SELECT v FROM t WHERE id = 5"))).scalar_one() == "uncommitted"


async def test_the_budget_is_what_stops_a_long_read(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "INLINE_READ_STEPS", 10_000_000)
    async with database.transaction(readonly=True) as s:
        _, ran_on = (await s.execute(text("SELECT sum(length(v)), tid() FROM t"))).one()
    assert ran_on == threading.get_ident()
