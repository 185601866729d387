"""`StreamUser`: who opens a session's event stream, by a bearer credential or by a stream ticket."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query
from fastapi.security import OAuth2PasswordBearer

from agent_api.auth import service as auth_service
from agent_api.deps import DB, State
from agent_api.errors import Unauthorized
from agent_api.models import User
from agent_api.streaming import service

# auto_error=False: a missing credential is our 401 in our error shape (as `CurrentUser`'s).
_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)

TicketParam = Annotated[
    str | None,
    Query(
        max_length=200,
        description="A stream ticket (`POST /sessions/{id}/stream-ticket`) instead of the `Authorization` header, "
        "for browsers' EventSource, which cannot send headers. It opens this session's event stream until it "
        "expires, so EventSource's reconnects work; a ticket a WebSocket used is refused.",
    ),
]


async def get_stream_user(
    session_id: uuid.UUID,
    db: DB,
    state: State,
    token: Annotated[str | None, Depends(_bearer)],
    ticket: TicketParam = None,
) -> User:
    if ticket:
        # Its own write transaction: the request's own is read-only (a GET), and must not upgrade to a writer.
        async with state.db.transaction() as tx:
            user = await service.redeem_ticket_for_sse(tx, ticket, session_id)
        if user is None:
            raise Unauthorized("Invalid, expired or already used stream ticket", code="invalid_ticket")
        return user
    if not token:
        raise Unauthorized()
    return (await auth_service.authenticate(db, state, token)).user


StreamUser = Annotated[User, Depends(get_stream_user)]
