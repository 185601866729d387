"""SIGTERM to a real `agent-api serve` with a turn running, one waiting for a person, and a WebSocket and an SSE client
watching, then a restart on the same data dir.

What a client and an operator must see: the WebSocket closed with 1012 (service restart), the event stream ended
cleanly, a query sent during the drain refused (503 `shutting_down`, or no connection at all) and never accepted and
lost, the process gone with exit code 0 within its grace, the running turn recorded `interrupted` and the pending
permission request decided by the drain itself (before any restart recovery), no session left mid-turn, no agent
process left behind, and the restarted server serving as before.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from agent_api.cli import SHUTDOWN_GRACE_S
from tests.reliability.server import Service, alive, descendants, hex_id, poll, processes_using

pytestmark = pytest.mark.slow

STUCK = ("connecting", "processing", "waiting")
# On top of the server's own bound: a loaded two-core machine may be slow to schedule the exit.
EXIT_MARGIN_S = 15.0
LONG_TURN_S = 120  # far beyond the grace: only an interrupt ends this turn in time


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path)
    try:
        svc.start()
        yield svc
    finally:
        svc.close()


def create_session(svc: Service, headers: dict[str, str], mode: str) -> str:
    r = svc.http.post("/api/v1/sessions", json={"permission_mode": mode}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def query(client: httpx.Client, headers: dict[str, str], sid: str, message: str, **extra: object) -> httpx.Response:
    return client.post(f"/api/v1/sessions/{sid}/query", json={"message": message, **extra}, headers=headers)


class _Watcher(threading.Thread):
    """A client in its own thread, recording what it saw and how its connection ended."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.frames: list[str] = []
        self.error: BaseException | None = None

    def wait_connected(self, svc: Service) -> None:
        poll(lambda: self.connected.is_set() or self.ended.is_set(), 60, f"{self.name} connected")
        assert self.connected.is_set(), f"{self.name} failed: {self.error!r}\n{svc.output()}"


class WebSocketWatcher(_Watcher):
    def __init__(self, svc: Service, sid: str, token: str) -> None:
        super().__init__("websocket")
        self.url = f"ws://127.0.0.1:{svc.port}/api/v1/sessions/{sid}/stream?token={token}"
        self.close_code: int | None = None
        self.close_reason = ""

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=60, close_timeout=10, max_size=None) as ws:
                while True:
                    frame = ws.recv(timeout=300)
                    self.frames.append(str(frame))
                    if '"type":"connected"' in str(frame):
                        self.connected.set()
        except ConnectionClosed as closed:
            if closed.rcvd is not None:  # the close frame the server sent
                self.close_code, self.close_reason = closed.rcvd.code, closed.rcvd.reason
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended.set()


class EventStreamWatcher(_Watcher):
    def __init__(self, svc: Service, sid: str, headers: dict[str, str]) -> None:
        super().__init__("event stream")
        self.url = f"http://127.0.0.1:{svc.port}/api/v1/sessions/{sid}/events"
        self.headers = headers
        self.status: int | None = None
        self.ended_cleanly = False

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(300, connect=60)) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                self.status = response.status_code
                for line in response.iter_lines():  # a body cut off mid-chunk raises here
                    self.frames.append(line)
                    if line == "event: connected":
                        self.connected.set()
            self.ended_cleanly = True
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended.set()


class _Request(threading.Thread):
    """One request in its own thread and its own connection: the response, or the transport error that ended it."""

    def __init__(self, svc: Service, headers: dict[str, str], sid: str, message: str, **extra: object) -> None:
        super().__init__(daemon=True)
        self.args = (f"http://127.0.0.1:{svc.port}", headers, sid, message, extra)
        self.result: httpx.Response | Exception | None = None
        self.start()

    def run(self) -> None:
        base_url, headers, sid, message, extra = self.args
        try:
            with httpx.Client(base_url=base_url, timeout=httpx.Timeout(300, connect=30)) as client:
                self.result = query(client, headers, sid, message, **extra)
        except httpx.TransportError as exc:
            self.result = exc

    def outcome(self) -> httpx.Response | Exception:
        self.join(timeout=SHUTDOWN_GRACE_S + EXIT_MARGIN_S)
        assert self.result is not None, "the request outlived the server"
        return self.result


def refused(outcome: httpx.Response | Exception) -> bool:
    """Turned away during the drain: 503 `shutting_down`, or no connection to be had."""
    if isinstance(outcome, httpx.ConnectError):
        return True
    return (
        isinstance(outcome, httpx.Response)
        and outcome.status_code == 503
        and outcome.json()["error"]["code"] == "shutting_down"
    )


def pending_request(svc: Service, sid: str) -> str | None:
    rows = svc.rows(
        "SELECT id FROM permission_requests WHERE session_id = ? AND decision IS NULL",
        hex_id(sid),
    )
    return str(rows[0][0]) if rows else None


class TestSigterm:
    def test_drains_then_restarts_clean(self, service: Service) -> None:
        headers = service.login()
        token = headers["Authorization"].removeprefix("Bearer ")
        running_sid = create_session(service, headers, "bypassPermissions")
        asking_sid = create_session(service, headers, "default")
        idle_sid = create_session(service, headers, "bypassPermissions")
        warm = query(service.http, headers, idle_sid, "hello", wait=True)
        assert warm.status_code == 200 and warm.json()["turn_status"] == "completed", warm.text

        # A long turn, its client waiting for the answer (`wait: true` holds the request open).
        long_query = _Request(service, headers, running_sid, f"sleep: {LONG_TURN_S}", wait=True)
        running = poll(
            lambda: service.rows(
                "SELECT t.id FROM turns t JOIN sessions s ON s.id = t.session_id "
                "WHERE t.session_id = ? AND t.status = 'running' AND s.status = 'processing'",
                hex_id(running_sid),
            ),
            60,
            "the long turn running",
        )
        running_turn = str(running[0][0])
        # A turn that waits for a person: a Write in `default` mode asks.
        r = query(service.http, headers, asking_sid, "write asked.txt: only if allowed", wait=True)
        assert r.status_code == 202 and r.json()["status"] == "waiting", r.text
        asking_turn = hex_id(r.json()["turn_id"])
        request_id = poll(lambda: pending_request(service, asking_sid), 60, "a pending permission request")

        ws = WebSocketWatcher(service, running_sid, token)
        sse = EventStreamWatcher(service, asking_sid, headers)
        ws.start()
        sse.start()
        ws.wait_connected(service)
        sse.wait_connected(service)
        assert sse.status == 200
        started = descendants(service.proc.pid)
        assert started, "the agent CLIs run as children of the server"

        signalled = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        # Sent at once, racing the signal: turned away, or accepted and then run to its end like any other turn.
        racing = _Request(service, headers, idle_sid, "sent as the server was told to stop")
        # Once the drain has begun (it records the interruption of the running turn), nothing new is accepted.
        poll(
            lambda: (
                service.proc.poll() is not None
                or service.rows("SELECT 1 FROM turns WHERE id = ? AND status = 'interrupted'", running_turn)
            ),
            SHUTDOWN_GRACE_S + EXIT_MARGIN_S,
            "the drain interrupting the running turn",
        )
        late = _Request(service, headers, asking_sid, "sent during the drain").outcome()
        assert refused(late), _describe(late)

        # Within the server's stated grace (plus a margin for a loaded machine), and exit 0: a drained stop is clean.
        poll(
            lambda: service.proc.poll() is not None,
            SHUTDOWN_GRACE_S + EXIT_MARGIN_S - (time.monotonic() - signalled),
            "the exit",
        )
        output = service.output()
        assert service.proc.returncode == 0, output
        assert "Traceback" not in output and '"level": "error"' not in output, output

        # The watchers: the WebSocket closed with "service restart", the event stream ended with its last chunk.
        poll(lambda: ws.ended.is_set() and sse.ended.is_set(), 30, "both streams ending")
        assert ws.error is None, repr(ws.error)
        assert ws.close_code == 1012, (ws.close_code, ws.close_reason, ws.frames[-3:])
        # The drain comes before the connections close: the WebSocket saw how its session's turn ended.
        results = [json.loads(f)["data"] for f in ws.frames if json.loads(f)["type"] == "result"]
        assert [(r["turn_id"], r["turn_status"]) for r in results] == [(str(uuid.UUID(running_turn)), "interrupted")]
        assert sse.error is None and sse.ended_cleanly, repr(sse.error)

        # The client waiting on the long turn got an answer, not a dropped connection: the interrupted turn.
        answered = long_query.outcome()
        assert isinstance(answered, httpx.Response), _describe(answered)
        assert answered.status_code == 200, answered.text
        assert answered.json()["turn_status"] == "interrupted", answered.text
        raced = racing.outcome()
        assert refused(raced) or (isinstance(raced, httpx.Response) and raced.status_code == 202), _describe(raced)

        # Recorded by the drain itself, before any restart's recovery could do it.
        ((status,),) = service.rows("SELECT status FROM turns WHERE id = ?", running_turn)
        assert status == "interrupted"
        ((asked_status,),) = service.rows("SELECT status FROM turns WHERE id = ?", asking_turn)
        assert asked_status == "interrupted", asked_status
        ((decision, decided_by, decided_at),) = service.rows(
            "SELECT decision, decided_by, decided_at FROM permission_requests WHERE id = ?", request_id
        )
        assert (decision, decided_by) == ("deny", "cancelled") and decided_at is not None
        assert service.rows("SELECT id, status FROM sessions WHERE status IN (?, ?, ?)", *STUCK) == []
        assert service.rows("SELECT id, status FROM turns WHERE status IN ('queued', 'running')") == []
        if isinstance(raced, httpx.Response) and raced.status_code == 202:  # accepted: recorded, and ended
            assert service.rows("SELECT 1 FROM turns WHERE id = ?", hex_id(raced.json()["turn_id"]))
        assert "asked.txt" not in {p.name for p in service.workdir(asking_sid).iterdir()}

        # No agent process outlives its server.
        poll(lambda: not alive(started), 30, "the server's agent processes ending")
        assert not processes_using(service.data_dir), "processes still working in the data dir"

        service.start()
        headers = service.login()
        assert service.rows("SELECT id, status FROM sessions WHERE status IN (?, ?, ?)", *STUCK) == []
        for sid in (running_sid, asking_sid):
            r = service.http.get(f"/api/v1/sessions/{sid}", headers=headers)
            assert r.status_code == 200 and r.json()["status"] == "active", r.text
        # Served as before: the interrupted session takes its next message, and a new session its first.
        again = query(service.http, headers, running_sid, "hello again", wait=True)
        assert again.status_code == 200 and again.json()["turn_status"] == "completed", again.text
        fresh = create_session(service, headers, "bypassPermissions")
        first = query(service.http, headers, fresh, "hello", wait=True)
        assert first.status_code == 200 and first.json()["turn_status"] == "completed", first.text


def _describe(outcome: httpx.Response | Exception) -> str:
    if isinstance(outcome, httpx.Response):
        return f"{outcome.status_code} {outcome.text}"
    return repr(outcome)
