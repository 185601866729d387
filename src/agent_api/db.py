"""Engine and session factory. SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` for writes, which queue in
the process first come first served (`_WriterQueue`); reads get a lazy session with no write transaction (see
`Database.begin_session`) whose statements run on the event loop's thread (see `_OneHopCursor.execute`)."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_cursor
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session as SyncSession
from sqlalchemy.util import await_only, immutabledict

log = logging.getLogger("agent_api.db")

# Execution option naming how a SQLite transaction begins; read-only work asks for "DEFERRED".
SQLITE_BEGIN = "sqlite_begin"
# Key in `session.info` where a transaction keeps the work to start once it commits (see `after_commit`).
AFTER_COMMIT = "after_commit"
SAVEPOINT_MARKS = "after_commit_savepoint_marks"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# At least the concurrency a server sees, so connections are not opened and closed under load (an aiosqlite
# connection is a new thread plus its PRAGMAs).
POOL_SIZE = 20


def create_engine(url: str, *, busy_timeout_ms: int = 30_000, pool_size: int = POOL_SIZE) -> AsyncEngine:
    if not is_sqlite(url):
        # No pre-ping: a round trip on every checkout. A connection the server dropped fails its statement once and
        # is invalidated by the pool (a disconnect error), and `pool_recycle` retires old ones before that happens.
        return create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, json_serializer=_json_text
        )
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"timeout": busy_timeout_ms / 1000},
        json_serializer=_json_text,
    )
    _configure_sqlite(engine, busy_timeout_ms)
    return engine


class _OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose statement runs in one trip to aiosqlite's thread: SQLAlchemy's own adapter makes four (open
    the cursor, execute, fetch, close), and each trip is a thread switch there and back, the largest cost of a small
    read."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = immutabledict()
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: Any = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    def _run(self, operation: str, parameters: Any, many: bool) -> None:
        cursor = self._connection._conn.cursor()
        try:
            if many:
                cursor.executemany(operation, parameters)
            else:
                cursor.execute(operation, parameters if parameters is not None else ())
            self._description = cursor.description
            if cursor.description:
                self._rows = collections.deque(cursor.fetchall())
            self._rowcount, self._lastrowid = cursor.rowcount, cursor.lastrowid
        finally:
            cursor.close()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        adapted = self._adapt_connection
        if not (_reads_inline(adapted) and _is_read(operation)):
            _stop_inline(adapted)
        elif self._run_inline(operation, parameters):
            return None
        # else a read over its budget: it starts again on aiosqlite's thread (a read can be run twice)
        return super().execute(operation, parameters)

    def _run_inline(self, operation: Any, parameters: Any) -> bool:
        """Run a read on the calling thread, unless it outgrows `INLINE_READ_STEPS` (then False, nothing done)."""
        conn = self._connection._conn
        conn.set_progress_handler(_interrupt, INLINE_READ_STEPS)
        try:
            self._run(operation, parameters, False)
        except sqlite3.OperationalError as error:
            if str(error) == "interrupted":
                return False
            self._adapt_connection._handle_exception(error)
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        finally:
            conn.set_progress_handler(None, 0)
        return True

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            await self._connection._execute(self._run, operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            await self._connection._execute(self._run, operation, seq_of_parameters, True)

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneHopCursor

    def commit(self) -> None:
        if _reads_inline(self):
            self._connection._conn.commit()
        else:
            super().commit()

    def rollback(self) -> None:
        if _reads_inline(self):
            self._connection._conn.rollback()
        else:
            super().rollback()


# A read transaction (BEGIN DEFERRED, then SELECTs) runs on the event loop's thread instead of aiosqlite's: in WAL
# mode a reader never waits for a lock, and an indexed read takes microseconds, less than the thread switches (and
# the GIL hand-overs under load) each statement costs otherwise. A read that goes on past INLINE_READ_STEPS of
# SQLite's virtual machine (one to two milliseconds: a search scanning many rows, say) is stopped and run again on
# aiosqlite's thread, so no read holds up the event loop for long. Anything else, or anything after a write in the
# same transaction, goes to aiosqlite's thread as before, where a wait for the write lock blocks only that thread.
_INLINE = "agent_api_inline"
_READ_PREFIXES = ("SELECT", "BEGIN DEFERRED")
INLINE_READ_STEPS = 50_000


def _interrupt() -> int:
    return 1  # called once a read has run INLINE_READ_STEPS steps: stop it


def _is_read(operation: str) -> bool:
    return operation.lstrip()[:14].upper().startswith(_READ_PREFIXES)


def _reads_inline(adapted: Any) -> bool:
    return getattr(adapted._connection, _INLINE, False) and not adapted._execute_mutex.locked()


def _stop_inline(adapted: Any) -> None:
    if getattr(adapted._connection, _INLINE, False):
        _set_inline(adapted, False)


def _set_inline(adapted: Any, inline: bool) -> None:
    setattr(adapted._connection, _INLINE, inline)  # on aiosqlite's connection: the adapter has fixed slots


def _json_text(value: Any) -> str:
    # Non-ASCII stays as written, so text search and tag filters over JSON columns see "größe", not "gr\\u00f6\\u00dfe".
    return json.dumps(value, ensure_ascii=False)


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if type(dbapi_conn) is AsyncAdapt_aiosqlite_connection:
            dbapi_conn.__class__ = _OneHopConnection  # same slots, other cursor class: see `_OneHopCursor`
        # Let us issue BEGIN ourselves: pysqlite's implicit BEGIN is DEFERRED, which turns lock
        # upgrades into immediate "database is locked" errors under concurrent writers.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    writers = _WriterQueue(busy_timeout_ms / 1000)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE") == "DEFERRED":
            _set_inline(conn.connection.dbapi_connection, True)
            conn.exec_driver_sql("BEGIN DEFERRED")
            return
        _set_inline(conn.connection.dbapi_connection, False)
        conn.info[_WRITER_TURN] = (asyncio.get_running_loop(), writers.wait_turn())
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _end_turn(conn.info)
            raise

    @event.listens_for(sync_engine, "commit")
    @event.listens_for(sync_engine, "rollback")
    def _on_end(conn: Connection) -> None:
        _end_turn(conn.info)

    # A connection returned to the pool or dropped without either event (an error, a cancelled request) must not
    # keep the turn: every later writer would wait for it.
    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        _end_turn(record.info)

    @event.listens_for(sync_engine, "invalidate")
    def _on_invalidate(_dbapi_conn: Any, record: Any, _exc: Any) -> None:
        _end_turn(record.info)

    # A connection garbage-collected while checked out is detached from the pool, with neither event above.
    @event.listens_for(sync_engine, "detach")
    def _on_detach(_dbapi_conn: Any, record: Any) -> None:
        _end_turn(record.info)


def _end_turn(info: dict[Any, Any]) -> None:
    turn = info.pop(_WRITER_TURN, None)
    if turn is None:
        return
    loop, lock = turn
    try:
        on_loop = asyncio.get_running_loop() is loop
    except RuntimeError:
        on_loop = False
    if on_loop:
        lock.release()
    elif not loop.is_closed():  # garbage collection may run this on another thread
        loop.call_soon_threadsafe(lock.release)


_WRITER_TURN = "agent_api_writer_turn"


class _WriterQueue:
    """This process's SQLite writers, first come first served. SQLite's own wait for its write lock (the busy
    timeout) retries with sleeps in no order, so among many writers one can starve past the timeout and fail with
    `database is locked`; queued here, a writer waits only for those before it, and the busy timeout is left to
    cover writers in other processes (a second server, the `agent-api` CLI)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # One lock per event loop: an application runs on one, but tests may start several in turn.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def wait_turn(self) -> asyncio.Lock:
        """Called from SQLAlchemy's sync layer inside its greenlet, so it can wait on the event loop."""
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        try:
            await_only(asyncio.wait_for(lock.acquire(), self.timeout_s))
        except TimeoutError:
            raise sqlite3.OperationalError(
                f"database is locked: no turn to write within {self.timeout_s:g} s in this process"
            ) from None
        return lock


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

        # Where other modules hang their own session events (the auth cache's invalidations).
        self.session_class: type[SyncSession] = _Session
        event.listen(_Session, "after_transaction_create", self._after_transaction_create)
        event.listen(_Session, "after_commit", self._after_commit)
        event.listen(_Session, "after_soft_rollback", self._after_rollback)
        self.sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, autoflush=True, sync_session_class=_Session
        )
        # Reads take a connection only when they first run a statement, so a request answered without the
        # database (an authenticated `GET /auth/me`) never checks one out; on SQLite they begin DEFERRED.
        self._read_engine = self.engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"}) if self.is_sqlite else None

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
        session = self.sessionmaker(bind=self._read_engine) if readonly and self._read_engine else self.sessionmaker()
        session.info["bus"] = self.bus
        session.info["wake_deliveries"] = self.wake_deliveries
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
