"""Application-wide dependencies: the per-request transaction and the shared application state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from agent_api.errors import AppError

if TYPE_CHECKING:
    from agent_api.state import AppState

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_state(conn: HTTPConnection) -> AppState:
    return cast("AppState", conn.app.state.agent_api)


async def _state(conn: HTTPConnection) -> AppState:
    # async: FastAPI runs a plain `def` dependency on the thread pool, a thread switch per request for nothing.
    return get_state(conn)


State = Annotated["AppState", Depends(_state)]


async def get_db(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back when it raises.

    An `AppError` with `keep_changes` (a detected refresh-token reuse, say) still commits what was flushed.
    """
    state = get_state(conn)
    readonly = conn.scope.get("method", "GET") in READ_ONLY_METHODS
    session = await state.db.begin_session(readonly=readonly)
    try:
        yield session
        await session.commit()
    except AppError as exc:
        if exc.keep_changes:
            await session.commit()
        else:
            await session.rollback()
        raise
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()


async def end_transaction(db: AsyncSession) -> None:
    """Commit the request's work now, for the few routes that go on to wait: for work that writes to the database
    itself (a turn recording its end) or for something slow (a PDF, a health check, DNS). Under SQLite's single
    writer, waiting while holding the request's transaction would stall every other writer. Everywhere else the
    `DB` dependency commits when the route returns."""
    await db.commit()


# scope="function": the commit happens before the response is sent, so a client that acts on a 201 at once
# (say, opens a stream with a ticket it was just given) finds the row committed.
DB = Annotated[AsyncSession, Depends(get_db, scope="function")]
