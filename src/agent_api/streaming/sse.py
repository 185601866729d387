"""One Server-Sent Events stream: the WebSocket's frames, each as an `id:` / `event:` / `data:` record.

The same `EventStream` as the WebSocket's (replay from the log, then live, no gap, no duplicate) feeds it. A stored
event's record has `id: <seq>`, so a browser's EventSource resumes with `Last-Event-ID` by itself; `connected` (and
`delta` with `?partial=1`) have none.

Ending at shut-down, two ways, both ending the response with its last chunk (a clean end for the client, which
reconnects with `Last-Event-ID`):
- uvicorn waits for open responses before the application's lifespan ends, forever by default. sse-starlette sees
  the server's `should_exit` (SIGTERM) and sets the response's `shutdown_event`; the stream then stops, or is cut
  after `SHUTDOWN_GRACE_S` (a client that stopped reading).
- When the lifespan ends (any other server, or the tests), `EventBus.shut_down_subscribers` stops it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from agent_api.bus import BusEvent, frame_text
from agent_api.state import AppState
from agent_api.streaming.service import EventStream, connected_data

log = logging.getLogger("agent_api.streaming")

HEARTBEAT_S = 15.0  # an SSE comment (`: ping ...`) on an idle line, so proxies do not drop it
SHUTDOWN_GRACE_S = 2.0  # how long a stream told of the server's exit may take to end before it is cut


class SessionEventsResponse(EventSourceResponse):
    """An event stream whose client stopped reading ends with a warning, not with a traceback; its slot among the
    user's open streams is given back however it ends."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # As the WebSocket's 4008: it resumes from the last id it got when it reads (and reconnects) again.
            log.warning("closing an event stream client that stopped reading")
        finally:
            self.release()


def event_stream(
    state: AppState, session_id: uuid.UUID, after_seq: int | None, partial: bool, release: Callable[[], None]
) -> EventSourceResponse:
    """The response streaming `connected`, then every stored event after `after_seq` (None: from now on);
    `release` gives back the stream's slot when the response ends."""
    feed = _Feed(state, session_id, after_seq, partial)
    server_exit = anyio.Event()  # set by sse-starlette when it sees the server shutting down

    async def end_on_server_exit() -> None:
        await server_exit.wait()
        feed.stop()  # the stream then ends with its last chunk sent, within the grace period

    return SessionEventsResponse(
        feed.records(),
        ping=HEARTBEAT_S,
        send_timeout=state.settings.ws_send_timeout_s,
        shutdown_event=server_exit,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
        data_sender_callable=end_on_server_exit,  # runs beside the stream, ends with it
        release=release,
    )


class _Feed:
    """The records of one event stream, and the way to end it early (the server shutting down)."""

    def __init__(self, state: AppState, session_id: uuid.UUID, after_seq: int | None, partial: bool) -> None:
        self.state, self.session_id, self.after_seq, self.partial = state, session_id, after_seq, partial
        self._stream: EventStream | None = None
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True
        if self._stream is not None:
            self._stream.stop()

    async def records(self) -> AsyncIterator[bytes]:
        subscription = self.state.require_bus().subscribe(self.session_id, partial=self.partial)
        stream = self._stream = EventStream(self.state, subscription, self.after_seq or 0)
        if self._stopped:
            stream.stop()

        async def shut_down() -> None:
            self.stop()

        subscription.on_shutdown = shut_down
        try:
            # Subscribed first, then read: the latest seq here is where the live events begin.
            data, latest = await connected_data(self.state, self.session_id)
            if self.after_seq is None:
                stream.last = latest
            yield ServerSentEvent(frame_text("connected", self.session_id, data), event="connected").encode()
            while (batch := await stream.next_batch()) is not None:
                if batch:
                    yield b"".join(_record(event) for event in batch)  # one write per batch, as the WebSocket's
        finally:
            subscription.close()


def _record(event: BusEvent) -> bytes:
    seq = None if event.seq is None else str(event.seq)
    return ServerSentEvent(event.frame_text, event=event.type, id=seq).encode()
