"""`/sessions/{id}/stream` (WebSocket), `/sessions/{id}/events` (Server-Sent Events) and `/sessions/{id}/stream-ticket`."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, WebSocket, status
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema
from sse_starlette import EventSourceResponse

from agent_api.auth import service as auth_service
from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB, State, get_state
from agent_api.errors import AppError, RateLimited
from agent_api.models import User
from agent_api.sessions import service as sessions_service
from agent_api.sessions.deps import OwnedSession
from agent_api.state import AppState
from agent_api.streaming import service, sse
from agent_api.streaming.connection import StreamConnection
from agent_api.streaming.deps import StreamUser
from agent_api.streaming.schemas import StreamTicketRead

router = APIRouter(tags=["streaming"])
log = logging.getLogger("agent_api.streaming")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
CLOSE_TOO_MANY_STREAMS = 4429
_SEQ = re.compile(r"[0-9]{1,18}")
MAX_SEQ = 10**18 - 1  # what `_SEQ` admits

_EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A `text/event-stream`: a `connected` record, then one record per event, `id` = its seq. "
        f"Idle lines get a comment (`: ping`) every {sse.HEARTBEAT_S:g} seconds.",
        "content": {
            "text/event-stream": {
                # On OpenAPI 3.1 a text/event-stream schema describes one event of the stream.
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "event": {"type": "string", "description": "The frame's `type`"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "description": "The WebSocket frame, as JSON",
                        },
                        "id": {"type": "string", "description": "The event's seq (stored events only)"},
                        "retry": {"type": "integer"},
                    },
                },
                "example": 'event: connected\r\ndata: {"type":"connected","session_id":"...","ts":"...",'
                '"data":{"status":"active","latest_seq":7,"pending_permission_requests":[]}}\r\n\r\n'
                'id: 8\r\nevent: message_sent\r\ndata: {"type":"message_sent","session_id":"...","seq":8,'
                '"ts":"...","data":{"message_id":"..."}}\r\n\r\n',
            }
        },
    },
    401: {"description": "No credential, or a bad token or ticket"},
    404: {"description": "Unknown session, or another user's"},
    422: {"description": "A bad `after_seq` or `Last-Event-ID`"},
    429: {"description": "The caller already has `AGENT_API_MAX_STREAMS_PER_USER` streams open"},
}


@router.post(
    "/sessions/{session_id}/stream-ticket", response_model=StreamTicketRead, status_code=status.HTTP_201_CREATED
)
async def stream_ticket(s: OwnedSession, user: CurrentUser, db: DB) -> StreamTicketRead:
    """A single-use ticket, valid 30 seconds, to open this session's WebSocket stream without a token in its
    URL (201). 404 for another user's session."""
    ticket, expires_at = await service.issue_ticket(db, user, s)
    return StreamTicketRead(ticket=ticket, expires_at=expires_at, expires_in=service.TICKET_TTL_S)


@router.get("/sessions/{session_id}/events", response_class=EventSourceResponse, responses=_EVENTS_RESPONSES)
async def session_events(
    session_id: uuid.UUID,
    user: StreamUser,
    db: DB,
    state: State,
    after_seq: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="Replay the stored events after this seq first")
    ] = None,
    last_event_id: Annotated[
        # A header is absent or an integer, never the text "null": the document does not offer null (the bounds sit
        # on the integer branch, or they would reach the document as "ge"/"le").
        Annotated[int, Field(ge=0, le=MAX_SEQ)] | SkipJsonSchema[None],
        Header(
            alias="Last-Event-ID",
            description="The `id` of the last record received; EventSource sends it when it reconnects. "
            "Wins over `after_seq`.",
        ),
    ] = None,
    partial: Annotated[bool, Query(description="Add unsaved token-level `delta` records")] = False,
) -> EventSourceResponse:
    """The events of one of the caller's sessions as Server-Sent Events: the WebSocket stream's frames, each record
    `id: <seq>`, `event: <type>`, `data: <frame>`. With `Last-Event-ID` (or `?after_seq=`) the stored events after
    it come first, then live ones, with no gap and no duplicate; without, live events only. Authenticated by the
    `Authorization` header or, for EventSource, a stream ticket in `?ticket=`. 404 for another user's session."""
    await sessions_service.get_owned(db, user, session_id)
    resume = last_event_id if last_event_id is not None else after_seq
    release = state.streams.take(user.id, state.settings.max_streams_per_user)
    return sse.event_stream(state, session_id, resume, partial, release)


async def _authenticate(state: AppState, session_id: uuid.UUID, token: str | None, ticket: str | None) -> User | None:
    async with state.db.transaction() as db:
        if ticket:
            return await service.redeem_ticket(db, ticket, session_id)
        if token:
            try:
                return (await auth_service.authenticate(db, state, token)).user
            except AppError:
                return None
    return None


@router.websocket("/sessions/{session_id}/stream")
async def stream(ws: WebSocket, session_id: str) -> None:
    """Live events of one of the caller's sessions (`?ticket=` or `?token=`); `?after_seq=N` replays stored events
    after N first, `?partial=1` adds `delta` frames. Closes 4401 unauthenticated, 4403 origin not allowed, 4404 unknown
    or another user's session, 4400 bad `after_seq`, 4429 when the user already has
    `AGENT_API_MAX_STREAMS_PER_USER` streams open."""
    state = get_state(ws)
    await ws.accept()
    origin = ws.headers.get("origin")
    allowed = state.settings.cors_origins
    if origin and allowed and origin not in allowed:
        await ws.close(CLOSE_FORBIDDEN_ORIGIN, "origin not allowed")
        return
    try:
        sid = uuid.UUID(session_id)
    except ValueError:
        await ws.close(CLOSE_NOT_FOUND, "session not found")
        return
    params = ws.query_params
    user = await _authenticate(state, sid, params.get("token"), params.get("ticket"))
    if user is None:
        await ws.close(CLOSE_UNAUTHENTICATED, "unauthenticated")
        return
    async with state.db.transaction(readonly=True) as db:
        owned = await sessions_service.find_owned(db, user.id, sid)
    if owned is None:
        await ws.close(CLOSE_NOT_FOUND, "session not found")
        return
    after_raw = params.get("after_seq")
    after_seq: int | None = None
    if after_raw is not None:
        if not _SEQ.fullmatch(after_raw):
            await ws.close(CLOSE_BAD_REQUEST, "after_seq must be a whole number")
            return
        after_seq = int(after_raw)
    partial = params.get("partial") in ("1", "true")
    try:
        release = state.streams.take(user.id, state.settings.max_streams_per_user)
    except RateLimited as exc:
        await ws.close(CLOSE_TOO_MANY_STREAMS, "too many open streams for this user")
        log.info("stream refused: %s", exc.message)
        return
    try:
        await StreamConnection(state, ws, user, sid).run(after_seq, partial)
    finally:
        release()
