"""`Idempotency-Key`: the first response to a keyed request is stored and replayed for the same key."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import IdempotencyRecord
from agent_api.models.base import utcnow

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200, min_length=1)]


async def replay(db: AsyncSession, user_id: uuid.UUID, scope: str, key: str | None) -> JSONResponse | None:
    if not key:
        return None
    stmt = select(IdempotencyRecord).where(
        IdempotencyRecord.user_id == user_id, IdempotencyRecord.scope == scope, IdempotencyRecord.key == key
    )
    record = (await db.scalars(stmt)).first()
    if record is None:
        return None
    return JSONResponse(record.response, status_code=record.status_code, headers={"Idempotent-Replay": "true"})


async def remember(
    db: AsyncSession, user_id: uuid.UUID, scope: str, key: str | None, status_code: int, body: Any
) -> None:
    if not key:
        return
    db.add(
        IdempotencyRecord(
            user_id=user_id,
            scope=scope,
            key=key,
            status_code=status_code,
            response=jsonable_encoder(body),
            created_at=utcnow(),
        )
    )
    await db.flush()
