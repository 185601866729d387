"""Engine and session factory. SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` for writes."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session as SyncSession

log = logging.getLogger("agent_api.db")

# Execution option naming how a SQLite transaction begins; read-only work asks for "DEFERRED".
SQLITE_BEGIN = "sqlite_begin"
# Key in `session.info` where a transaction keeps the work to start once it commits (see `after_commit`).
AFTER_COMMIT = "after_commit"
SAVEPOINT_MARKS = "after_commit_savepoint_marks"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, busy_timeout_ms: int = 30_000, pool_size: int = 10) -> AsyncEngine:
    if not is_sqlite(url):
        return create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, json_serializer=_json_text
        )
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout_ms / 1000}, json_serializer=_json_text)
    _configure_sqlite(engine, busy_timeout_ms)
    return engine


def _json_text(value: Any) -> str:
    # Non-ASCII stays as written, so text search and tag filters over JSON columns see "größe", not "gr\\u00f6\\u00dfe".
    return json.dumps(value, ensure_ascii=False)


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves: pysqlite's implicit BEGIN is DEFERRED, which turns lock
        # upgrades into immediate "database is locked" errors under concurrent writers.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


def after_commit(db: AsyncSession, job: Callable[[], object]) -> None:
    """Start `job` once this transaction commits, and never if it rolls back: how a service starts work (a turn,
    an execution, an agent warm-up) that must find its rows committed. `job` must only hand work over, not wait."""
    db.info.setdefault(AFTER_COMMIT, []).append(job)


class Database:
    """Owns the engine and hands out sessions; one instance per application.

    Work a transaction queues with `after_commit` starts right after it commits and is dropped on rollback: how
    turns start and how the event bus learns of events, never of uncommitted ones.
    """

    def __init__(self, url: str, *, busy_timeout_ms: int = 30_000) -> None:
        self.url = url
        self.engine = create_engine(url, busy_timeout_ms=busy_timeout_ms)
        # The event bus, when the application has one; work in a session reaches it through `session.info`.
        self.bus: Any = None
        # Wakes the webhook delivery loop once a transaction that queued deliveries commits.
        self.wake_deliveries: Callable[[], None] | None = None

        class _Session(SyncSession):
            pass

        event.listen(_Session, "after_transaction_create", self._after_transaction_create)
        event.listen(_Session, "after_commit", self._after_commit)
        event.listen(_Session, "after_soft_rollback", self._after_rollback)
        self.sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, autoflush=True, sync_session_class=_Session
        )

    @staticmethod
    def _after_transaction_create(session: SyncSession, transaction: Any) -> None:
        if transaction.nested:  # a savepoint: what was queued before it survives its rollback, nothing after
            marks = session.info.setdefault(SAVEPOINT_MARKS, {})
            marks[id(transaction)] = len(session.info.get(AFTER_COMMIT, ()))

    def _after_commit(self, session: SyncSession) -> None:
        if session.in_nested_transaction():
            return  # a savepoint was released: the work waits for the transaction itself to commit
        session.info.pop(SAVEPOINT_MARKS, None)
        for job in session.info.pop(AFTER_COMMIT, None) or ():
            try:
                job()
            except Exception:
                log.exception("work queued on a transaction failed to start")

    @staticmethod
    def _after_rollback(session: SyncSession, previous: Any) -> None:
        if getattr(previous, "nested", False):
            # A savepoint rolled back: the transaction goes on, without what was queued inside the savepoint.
            mark = session.info.get(SAVEPOINT_MARKS, {}).pop(id(previous), None)
            if mark is not None and AFTER_COMMIT in session.info:
                del session.info[AFTER_COMMIT][mark:]
            return
        session.info.pop(AFTER_COMMIT, None)
        session.info.pop(SAVEPOINT_MARKS, None)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    async def begin_session(self, *, readonly: bool = False) -> AsyncSession:
        session = self.sessionmaker()
        session.info["bus"] = self.bus
        session.info["wake_deliveries"] = self.wake_deliveries
        if readonly and self.is_sqlite:
            await session.connection(execution_options={SQLITE_BEGIN: "DEFERRED"})
        return session

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed on success, rolled back on any error."""
        session = await self.begin_session(readonly=readonly)
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            await session.close()

    async def dispose(self) -> None:
        await self.engine.dispose()
