"""One WebSocket connection: send the event stream, take the client's frames, keep the line alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent_api import json_input
from agent_api.bus import frame_text
from agent_api.errors import AppError
from agent_api.models import User
from agent_api.sessions import answers
from agent_api.sessions import service as sessions_service
from agent_api.sessions.schemas import PermissionAnswer, QueryRequest
from agent_api.state import AppState
from agent_api.streaming.service import EventStream, connected_data

log = logging.getLogger("agent_api.streaming")

CLOSE_TOO_SLOW = 4008  # fell too far behind: reconnect with after_seq
CLOSE_SHUTDOWN = 1012  # the server is restarting
CLOSE_WAIT_S = 2.0


class StreamConnection:
    def __init__(self, state: AppState, ws: WebSocket, user: User, session_id: uuid.UUID) -> None:
        self.state = state
        self.ws = ws
        self.user = user
        self.session_id = session_id
        self._send_lock = asyncio.Lock()
        self.last_sent = 0
        # Watched by `_keeper` instead of a timer per send: this is the hot path of every event to every client.
        self._sending_since: float | None = None
        self._last_activity = time.monotonic()

    async def send_frame(self, type_: str, data: Any) -> None:
        await self.send_texts([frame_text(type_, self.session_id, data)])

    async def send_texts(self, texts: list[str]) -> None:
        async with self._send_lock:
            self._sending_since = time.monotonic()
            try:
                for text in texts:
                    await self.ws.send_text(text)
            finally:
                self._sending_since = None
                self._last_activity = time.monotonic()

    async def run(self, after_seq: int | None, partial: bool) -> None:
        bus = self.state.require_bus()
        subscription = bus.subscribe(self.session_id, partial=partial)
        subscription.on_shutdown = lambda: self.close(CLOSE_SHUTDOWN, "server restarting; reconnect with after_seq")
        try:
            data, latest = await connected_data(self.state, self.session_id)
            await self.send_frame("connected", data)
            stream = EventStream(self.state, subscription, latest if after_seq is None else after_seq)
            self.last_sent = stream.last
            tasks = {
                asyncio.create_task(self._pump(stream), name=f"ws-pump-{self.session_id}"),
                asyncio.create_task(self._listen(), name=f"ws-listen-{self.session_id}"),
                asyncio.create_task(self._keeper(), name=f"ws-keeper-{self.session_id}"),
            }
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
            for task in done:
                exc = task.exception()
                if isinstance(exc, _TooSlow):
                    log.warning("closing a stream client that stopped reading (last seq sent %d)", self.last_sent)
                    await self.close(CLOSE_TOO_SLOW, f"too slow; reconnect with after_seq={self.last_sent}")
                elif exc is not None and not isinstance(exc, WebSocketDisconnect):
                    log.error("stream connection failed", exc_info=exc)
                    await self.close(1011, "internal error")
        finally:
            subscription.close()

    async def close(self, code: int, reason: str) -> None:
        # Bounded: a client that stopped reading cannot take the close frame either, and must not hold us.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason), CLOSE_WAIT_S)

    async def _pump(self, stream: EventStream) -> None:
        while True:
            batch = await stream.next_batch()
            if not batch:
                continue
            await self.send_texts([event.frame_text for event in batch])
            sent = [event.seq for event in batch if event.seq is not None]
            if sent:
                self.last_sent = sent[-1]

    async def _keeper(self) -> None:
        """Heartbeats on an idle line, and the end of a client that stopped reading."""
        settings = self.state.settings
        while True:
            await asyncio.sleep(min(settings.ws_heartbeat_s, settings.ws_send_timeout_s, 1.0) / 2)
            now = time.monotonic()
            since = self._sending_since
            if since is not None and now - since > settings.ws_send_timeout_s:
                # A stalled reader must not hold events for anyone else; it can resume from what it has.
                raise _TooSlow()
            if since is None and now - self._last_activity >= settings.ws_heartbeat_s:
                await self.send_frame("heartbeat", {"latest_seq": self.last_sent})

    async def _listen(self) -> None:
        while True:
            try:
                message = json_input.loads(await self.ws.receive_text())
            except WebSocketDisconnect:
                return
            except json_input.TooDeep as exc:
                await self._error("too_deeply_nested", str(exc))
                continue
            except (ValueError, KeyError):
                await self._error("invalid_frame", "Frames are JSON objects with a `type`")
                continue
            if not isinstance(message, dict):
                await self._error("invalid_frame", "Frames are JSON objects with a `type`")
                continue
            await self._handle(message)

    async def _error(self, code: str, message: str) -> None:
        await self.send_frame("error", {"code": code, "message": message})

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        # Fields may sit at the top level or under `data`; both shapes exist among clients.
        nested = message.get("data")
        data: dict[str, Any] = nested if isinstance(nested, dict) else message
        try:
            if kind == "ping":
                await self.send_frame("pong", {})
            elif kind == "query":
                await self._query(data)
            elif kind == "interrupt":
                interrupted = await self.state.dispatcher.interrupt(self.session_id)
                await self.send_frame("interrupted", {"interrupted": interrupted})
            elif kind == "permission_response":
                await self._permission_response(data)
            else:
                await self._error("unknown_frame", f"Unknown frame type {kind!r}")
        except AppError as exc:
            await self._error(exc.code, exc.message)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            await self._error("validation_error", f"Invalid frame: {where}: {first['msg']}")

    async def _query(self, data: dict[str, Any]) -> None:
        body = QueryRequest.model_validate({"message": data.get("message")})
        async with self.state.db.transaction() as db:
            s = await sessions_service.find_owned(db, self.user.id, self.session_id)
            if s is None:
                raise AppError("Session not found", code="session_not_found")
            # `message_sent` reaches the client through the event log, in order with everything else.
            await sessions_service.send_message(db, self.state, self.user, s, body.message)

    async def _permission_response(self, data: dict[str, Any]) -> None:
        answer = PermissionAnswer.model_validate(
            {"decision": data.get("decision"), "message": data.get("message"), "remember": data.get("remember")}
        )
        try:
            request_id = uuid.UUID(str(data.get("request_id")))
        except ValueError:
            await self._error("validation_error", "request_id must be a UUID")
            return
        async with self.state.db.transaction() as db:
            s = await sessions_service.find_owned(db, self.user.id, self.session_id)
            if s is None:
                raise AppError("Session not found", code="session_not_found")
            await answers.answer_permission(db, self.state, self.user, s, request_id, answer)


class _TooSlow(Exception):
    pass
