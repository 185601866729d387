"""`Idempotency-Key` (as the IETF draft and Stripe use it): a keyed request runs once; a retry with the same key and
the same request gets the stored answer, one with another request 422 `idempotency_key_reused`, one that arrives
while the first is still running 409 `idempotency_in_progress`. A stored 202 is not a final answer: routes whose work
goes on after answering (a query's turn, a task execution) answer a retry with that work's state now (`Replay`).

A key is claimed by inserting its row at the start of the request, in the request's transaction: a concurrent
retry waits on that row (PostgreSQL's unique index; SQLite's single writer) and then sees the committed answer,
or finds the key free again if the first request failed (its transaction, row included, rolled back).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from agent_api.errors import Conflict, ValidationFailed
from agent_api.models import IdempotencyRecord
from agent_api.models.base import utcnow

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200, min_length=1)]


@dataclass(frozen=True)
class ClaimedKey:
    """A key this request holds until it records its answer with `finish`."""

    user_id: uuid.UUID
    scope: str
    key: str


def fingerprint(request: Request, body: BaseModel | None) -> str:
    """Of the method, the path and the validated body in canonical form: key order and ignored fields do not
    change it, a different message or option does."""
    canonical = {
        "method": request.method,
        "path": request.url.path,
        "body": body.model_dump(mode="json") if body is not None else None,
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _lookup(user_id: uuid.UUID, scope: str, key: str) -> Any:
    return select(IdempotencyRecord).where(
        IdempotencyRecord.user_id == user_id, IdempotencyRecord.scope == scope, IdempotencyRecord.key == key
    )


class Replay(JSONResponse):
    """The stored answer to a keyed request, replayed as it was; `stored` and `stored_status` let a route answer
    with something more current instead (a query's turn as it is now, an execution's status)."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__(record.response, status_code=record.status_code, headers={"Idempotent-Replay": "true"})
        self.stored: dict[str, Any] = dict(record.response or {})
        self.stored_status = record.status_code


def _answer(record: IdempotencyRecord, request_fingerprint: str) -> Replay:
    if record.fingerprint is not None and record.fingerprint != request_fingerprint:
        raise ValidationFailed(
            "This Idempotency-Key was used for a different request; use a new key", code="idempotency_key_reused"
        )
    if record.in_progress:
        raise Conflict(
            "A request with this Idempotency-Key is still in progress; retry later for its answer",
            code="idempotency_in_progress",
        )
    return Replay(record)


async def begin(
    db: AsyncSession, user_id: uuid.UUID, scope: str, key: str | None, request: Request, body: BaseModel | None
) -> ClaimedKey | Replay | None:
    """None: no key. A `Replay`: the stored answer. A claim: this request goes ahead and must `finish`."""
    if not key:
        return None
    request_fingerprint = fingerprint(request, body)
    record = (await db.scalars(_lookup(user_id, scope, key))).first()
    if record is not None:
        return _answer(record, request_fingerprint)
    placeholder = IdempotencyRecord(
        user_id=user_id,
        scope=scope,
        key=key,
        fingerprint=request_fingerprint,
        in_progress=True,
        status_code=202,
        response={},
        created_at=utcnow(),
    )
    try:
        async with db.begin_nested():
            db.add(placeholder)
    except IntegrityError:
        # A concurrent request with this key committed first: its answer, or its request still running.
        record = (await db.scalars(_lookup(user_id, scope, key).execution_options(populate_existing=True))).first()
        if record is None:
            raise Conflict(
                "A request with this Idempotency-Key is still in progress; retry later for its answer",
                code="idempotency_in_progress",
            ) from None
        return _answer(record, request_fingerprint)
    return ClaimedKey(user_id, scope, key)


async def finish(
    db: AsyncSession, claim: ClaimedKey | None, status_code: int, body: Any, *, in_progress: bool = False
) -> None:
    """Record the answer for the claimed key; `in_progress` while the request goes on after committing (a
    `wait: true` query), so a retry meanwhile gets 409 and a restart leaves the answer given so far."""
    if claim is None:
        return
    await db.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.user_id == claim.user_id,
            IdempotencyRecord.scope == claim.scope,
            IdempotencyRecord.key == claim.key,
        )
        .values(status_code=status_code, response=jsonable_encoder(body), in_progress=in_progress)
        .execution_options(synchronize_session=False)
    )


def claims_in(db: AsyncSession) -> list[ClaimedKey]:
    """The keys this transaction has claimed and not answered yet: what a route that commits early (a fork,
    before its copy) must `release` if it then fails, as a rollback would have."""
    return [
        ClaimedKey(o.user_id, o.scope, o.key)
        for o in db.identity_map.values()
        if isinstance(o, IdempotencyRecord) and o.in_progress and not o.response
    ]


async def release(db: AsyncSession, claims: list[ClaimedKey]) -> None:
    """Free claimed keys whose request failed without an answer, so a retry runs it afresh."""
    for claim in claims:
        await db.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.user_id == claim.user_id,
                IdempotencyRecord.scope == claim.scope,
                IdempotencyRecord.key == claim.key,
                IdempotencyRecord.in_progress.is_(True),
            )
        )


async def settle_in_progress(db: AsyncSession) -> int:
    """After a restart no request is running: keys left in progress answer what their request had answered, and
    a key whose request never answered (it died committing early, a fork mid-copy) is free again."""
    pending = (await db.scalars(select(IdempotencyRecord).where(IdempotencyRecord.in_progress.is_(True)))).all()
    for record in pending:
        if record.response:
            record.in_progress = False
        else:
            await db.delete(record)
    await db.flush()
    return len(pending)
