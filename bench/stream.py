"""Stream fan-out and replay on the embedded default (SQLite, in-process bus, one server process).

    python bench/stream.py --subscribers 100 --events 1000 --replay 10000

The server (uvicorn, the real app) and the event writer run in this process; the subscribers run in a child
process, so their JSON parsing does not compete with the server's event loop. Each event carries its commit time;
latency is receipt time minus commit time, per subscriber per event. Replay: a fresh connection with
`?after_seq=0` on a session holding `--replay` events, timed until the last one arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets

from agent_api.app import create_app
from agent_api.cli import UVICORN_OPTIONS
from agent_api.config import Settings
from agent_api.sessions.events import append_event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _subscribe_all(url: str, count: int, expected: int, ready: Any, out: Any) -> None:
    async def one() -> list[float]:
        latencies: list[float] = []
        async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
            json.loads(await ws.recv())  # connected
            ready.put(1)
            while len(latencies) < expected:
                frame = json.loads(await ws.recv())
                if frame.get("type") == "bench":
                    latencies.append(time.time() - frame["data"]["committed_at"])
        return latencies

    results = await asyncio.gather(*(one() for _ in range(count)))
    out.put([x for r in results for x in r])


def subscriber_process(url: str, count: int, expected: int, ready: Any, out: Any) -> None:
    asyncio.run(_subscribe_all(url, count, expected, ready, out))


async def write(app: Any, session_id: uuid.UUID, n: int, pace_s: float, per_tx: int = 1) -> None:
    db = app.state.agent_api.db
    for i in range(0, n, per_tx):
        async with db.transaction() as s:
            for j in range(per_tx):
                await append_event(s, session_id, "bench", {"i": i + j, "committed_at": time.time()})
        if pace_s:
            await asyncio.sleep(pace_s)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main(subscribers: int, events: int, replay: int, pace_ms: float, client_procs: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    settings = Settings(data_dir=data_dir, admin_username="bench", admin_password="bench-password", log_level="WARNING")
    app = create_app(settings)
    port = free_port()
    async with app.router.lifespan_context(app):
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", **UVICORN_OPTIONS
        )  # type: ignore[arg-type]
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            login = await client.post("/api/v1/auth/login", json={"username": "bench", "password": "bench-password"})
            token = login.json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            fan = (await client.post("/api/v1/sessions", json={}, headers=headers)).json()["id"]
            store = (await client.post("/api/v1/sessions", json={}, headers=headers)).json()["id"]

        ctx = multiprocessing.get_context("spawn")
        ready, out = ctx.Queue(), ctx.Queue()
        url = f"ws://127.0.0.1:{port}/api/v1/sessions/{fan}/stream?token={token}"
        shares = [subscribers // client_procs + (i < subscribers % client_procs) for i in range(client_procs)]
        children = [ctx.Process(target=subscriber_process, args=(url, n, events, ready, out)) for n in shares]
        for child in children:
            child.start()
        for _ in range(subscribers):
            await asyncio.to_thread(ready.get, True, 120)
        started = time.perf_counter()
        await write(app, uuid.UUID(fan), events, pace_ms / 1000)
        latencies = []
        for _ in children:
            latencies.extend(await asyncio.to_thread(out.get, True, 300))
        fan_out_s = time.perf_counter() - started
        for child in children:
            await asyncio.to_thread(child.join, 30)

        await write(app, uuid.UUID(store), replay, 0, per_tx=500)
        replay_url = f"ws://127.0.0.1:{port}/api/v1/sessions/{store}/stream?token={token}&after_seq=0"
        begun = time.perf_counter()
        received = 0
        async with websockets.connect(replay_url, max_size=None) as ws:
            while received < replay:
                frame = json.loads(await ws.recv())
                received += frame.get("type") == "bench"
        replay_s = time.perf_counter() - begun
        server.should_exit = True
        await serving

    ms = [x * 1000 for x in latencies]
    print(
        f"\n{subscribers} subscribers in {client_procs} processes x {events} events ({pace_ms} ms apart): "
        f"{len(ms)} deliveries in {fan_out_s:.1f} s"
    )
    print("| measure | result | target |")
    print("|---|---|---|")
    print(f"| commit to receipt, p50 | {statistics.median(ms):.1f} ms | |")
    print(
        f"| commit to receipt, p99 | {pct(ms, 0.99):.1f} ms | <= 20 ms ({'met' if pct(ms, 0.99) <= 20 else 'missed'}) |"
    )
    print(
        f"| replay of {replay} events after reconnect | {replay_s * 1000:.0f} ms | <= 1000 ms ({'met' if replay_s <= 1 else 'missed'}) |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--replay", type=int, default=10_000)
    parser.add_argument("--pace-ms", type=float, default=5.0, help="pause between events (one event per transaction)")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the subscribers are spread over")
    args = parser.parse_args()
    asyncio.run(main(args.subscribers, args.events, args.replay, args.pace_ms, args.client_procs))
