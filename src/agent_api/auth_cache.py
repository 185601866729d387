"""What authentication learnt about a login (its user, its API key), kept so a request need not read it again.

Nothing here expires by time: an entry lives until a committed change to a `users`, `refresh_token_families` or
`api_keys` row of its user says otherwise. `watch` sees every such change a transaction makes, through the ORM (a
flush, or an `update()`/`delete()` statement), and drops the user's entries once the transaction commits. On
PostgreSQL the same transaction also sends `NOTIFY agent_api_auth` with the user ids, so every other process drops
them too; a process that is not listening (not yet connected, or reconnecting) does not use the cache at all.

A read racing a revocation cannot put a stale entry back: each invalidation moves `generation` on, and an entry
read before it is not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, make_transient_to_detached
from sqlalchemy.orm import Session as SyncSession
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, ColumnElement

from agent_api.models import ApiKey, RefreshTokenFamily, User

log = logging.getLogger("agent_api.auth")
NOTIFY_CHANNEL = "agent_api_auth"
# Execution option for a statement that changes nothing authentication reads (an API key's `last_used_at`).
AUTH_NEUTRAL = "auth_neutral"
_CHANGED = "auth_changed_users"  # key in `session.info`: user ids, or None for "anyone"
_ALL: None = None
_MAX_ENTRIES = 10_000
_WATCHED = (User, RefreshTokenFamily, ApiKey)
_USER_COLUMNS = tuple(attr.key for attr in User.__mapper__.column_attrs)


@dataclass
class CachedLogin:
    """A login as authentication last read it. `user` is a detached copy: each request merges its own."""

    user: User
    family_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    api_key_expires_at: datetime | None = None
    api_key_used_at: datetime | None = None


def detached_copy(user: User) -> User:
    copy = User(**{key: getattr(user, key) for key in _USER_COLUMNS})
    make_transient_to_detached(copy)
    return copy


@dataclass
class AuthCache:
    # False until this process can hear other processes' invalidations (PostgreSQL); always True on SQLite.
    ready: bool = True
    generation: int = 0
    _entries: dict[str, CachedLogin] = field(default_factory=dict)
    _keys_of: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    # Awaitable news of each invalidation, for whoever must know one has arrived (tests across processes).
    changed: asyncio.Event | None = None

    def get(self, key: str) -> CachedLogin | None:
        return self._entries.get(key) if self.ready else None

    def put(self, key: str, login: CachedLogin, generation: int) -> None:
        """Keep `login`, read when `generation` was current, unless something was invalidated since."""
        if not self.ready or generation != self.generation:
            return
        if len(self._entries) >= _MAX_ENTRIES:
            self.clear()
        self._entries[key] = login
        self._keys_of.setdefault(login.user.id, set()).add(key)

    def invalidate(self, user_ids: Iterable[uuid.UUID] | None) -> None:
        self.generation += 1
        if user_ids is None:
            self._entries.clear()
            self._keys_of.clear()
        else:
            for user_id in user_ids:
                for key in self._keys_of.pop(user_id, ()):
                    self._entries.pop(key, None)
        if self.changed is not None:
            self.changed.set()

    def clear(self) -> None:
        self.invalidate(_ALL)

    def holds(self, user_id: uuid.UUID) -> bool:
        return bool(self._keys_of.get(user_id))

    def __len__(self) -> int:
        return len(self._entries)


# --- seeing changes ----------------------------------------------------------------------------------------------


def watch(session_class: type[SyncSession], cache: AuthCache, *, notify: bool) -> None:
    """Invalidate `cache` after every commit, by sessions of `session_class`, that changed a watched row; with
    `notify`, also tell other processes (PostgreSQL) inside the same transaction."""

    def remember(session: SyncSession, user_ids: set[uuid.UUID] | None) -> None:
        if _CHANGED in session.info and session.info[_CHANGED] is _ALL:
            return
        if user_ids is _ALL:
            session.info[_CHANGED] = _ALL
        else:
            session.info.setdefault(_CHANGED, set()).update(user_ids)

    @event.listens_for(session_class, "after_flush")
    def _after_flush(session: SyncSession, _context: Any) -> None:
        changed = {_user_of(obj) for obj in session.deleted if isinstance(obj, _WATCHED)}
        changed |= {_user_of(obj) for obj in session.dirty if isinstance(obj, _WATCHED) and _matters(obj)}
        if changed:
            remember(session, changed)

    @event.listens_for(session_class, "do_orm_execute")
    def _on_execute(state: ORMExecuteState) -> None:
        if not (state.is_update or state.is_delete) or state.execution_options.get(AUTH_NEUTRAL):
            return
        if any(m.class_ in _WATCHED for m in state.all_mappers):
            remember(state.session, _users_in(getattr(state.statement, "whereclause", None)))

    def _before_commit(session: SyncSession) -> None:
        if session.in_nested_transaction():
            return
        session.flush()  # so that changes the commit would flush are seen before NOTIFY is sent
        if _CHANGED in session.info:
            session.connection().execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": NOTIFY_CHANNEL, "payload": _payload(session.info[_CHANGED])},
            )

    if notify:  # NOTIFY is transactional: other processes hear of the change exactly when it commits
        event.listen(session_class, "before_commit", _before_commit)

    @event.listens_for(session_class, "after_commit")
    def _after_commit(session: SyncSession) -> None:
        if not session.in_nested_transaction() and _CHANGED in session.info:
            cache.invalidate(session.info.pop(_CHANGED))

    @event.listens_for(session_class, "after_soft_rollback")
    def _after_rollback(session: SyncSession, previous: Any) -> None:
        # A savepoint's rollback keeps what was seen: dropping an entry too many is harmless, one too few is not.
        if not getattr(previous, "nested", False):
            session.info.pop(_CHANGED, None)


# What a login changes on its user: nothing authentication decides on, so logging in keeps the user's other logins.
_BOOKKEEPING = frozenset({"last_login_at", "updated_at"})


def _matters(obj: object) -> bool:
    if not isinstance(obj, User):
        return True
    state = inspect(obj)
    return any(state.attrs[key].history.has_changes() for key in _USER_COLUMNS if key not in _BOOKKEEPING)


def _user_of(obj: object) -> uuid.UUID:
    return obj.id if isinstance(obj, User) else obj.user_id  # type: ignore[attr-defined]


_USER_ID_COLUMNS = frozenset({("users", "id"), ("refresh_token_families", "user_id"), ("api_keys", "user_id")})


def _users_in(where: ColumnElement[Any] | None) -> set[uuid.UUID] | None:
    """The user a statement is limited to by an `AND`ed `user id == value`; None (anyone) when it is not."""
    if where is None:
        return _ALL
    clauses = list(where.clauses) if getattr(where, "operator", None) is operators.and_ else [where]
    for clause in clauses:
        if (
            isinstance(clause, BinaryExpression)
            and clause.operator is operators.eq
            and (getattr(getattr(clause.left, "table", None), "name", None), getattr(clause.left, "key", None))
            in _USER_ID_COLUMNS
            and isinstance(clause.right, BindParameter)
            and isinstance(clause.right.value, uuid.UUID)
        ):
            return {clause.right.value}
    return _ALL


def _payload(changed: set[uuid.UUID] | None) -> str:
    payload = "*" if changed is _ALL else ",".join(sorted(str(u) for u in changed))
    return payload if len(payload) < 7000 else "*"


def _parse(payload: str) -> set[uuid.UUID] | None:
    if payload == "*":
        return _ALL
    try:
        return {uuid.UUID(part) for part in payload.split(",") if part}
    except ValueError:
        return _ALL


# --- hearing other processes (PostgreSQL) ------------------------------------------------------------------------


class AuthListener:
    """LISTENs for other processes' invalidations. Until it is listening the cache is not used, and every
    reconnection empties it, since notifications sent while it was away are lost."""

    def __init__(self, database_url: str, cache: AuthCache) -> None:
        self.conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.cache = cache
        self.task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def ensure_started(self, spawn: Callable[[Any, str], asyncio.Task[Any]]) -> None:
        if self.task is None or self.task.done():
            self.task = spawn(self._listen_forever(), "auth-cache-listener")

    async def _listen_forever(self) -> None:
        import psycopg

        delay = 0.5
        try:
            while True:
                try:
                    async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                        await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                        self.cache.clear()
                        self.cache.ready = True
                        self.listening.set()
                        delay = 0.5
                        async for notice in conn.notifies():
                            self.cache.invalidate(_parse(notice.payload))
                except Exception:
                    log.exception("auth cache listener lost its connection; reconnecting in %.1fs", delay)
                self.listening.clear()
                self.cache.ready = False
                self.cache.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        finally:
            with contextlib.suppress(Exception):
                self.cache.ready = False
                self.cache.clear()
