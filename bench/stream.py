"""Stream fan-out and replay on the embedded default (SQLite, in-process bus, one server process).

    python bench/stream.py --subscribers 100 --events 1000 --replay 10000

The server (uvicorn, the real app) and the event writer run in this process; the subscribers run in child
processes and read frames off plain sockets (a lean client, so that 100 of them on a 2-core machine leave the
server its share of the CPU). Each event carries its commit time; latency is receipt time minus commit time, per
subscriber per event. Replay: a fresh connection with `?after_seq=0` on a session holding `--replay` events, from
another process, timed until the last one arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from agent_api.app import create_app
from agent_api.cli import UVICORN_OPTIONS
from agent_api.config import Settings
from agent_api.event_log import append_event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake on a plain socket: the subscribers parse frames themselves, so that client-side
    library overhead (100 clients share two cores with the server here) does not dominate what is measured."""
    rest = url.removeprefix("ws://")
    hostport, _, path = rest.partition("/")
    host, port = hostport.split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def _frames(reader: asyncio.StreamReader) -> Any:
    """Text payloads of server frames (unmasked, unfragmented: what this server sends)."""
    while True:
        head = await reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        if head[0] & 0x0F == 0x1:
            yield payload


async def _subscribe_all(url: str, count: int, expected: int, ready: Any, out: Any) -> None:
    async def one() -> list[float]:
        latencies: list[float] = []
        reader, writer = await _open(url)
        frames = _frames(reader)
        await anext(frames)  # connected
        ready.put(1)
        async for payload in frames:
            now = time.time()
            if b'"type":"bench"' in payload:
                latencies.append(now - json.loads(payload)["data"]["committed_at"])
                if len(latencies) == expected:
                    break
        writer.close()
        return latencies

    results = await asyncio.gather(*(one() for _ in range(count)))
    out.put([x for r in results for x in r])


async def _replay(url: str, expected: int, out: Any) -> None:
    reader, writer = await _open(url)
    begun = time.perf_counter()
    received = 0
    async for payload in _frames(reader):
        received += b'"type":"bench"' in payload
        if received == expected:
            break
    out.put(time.perf_counter() - begun)
    writer.close()


def replay_process(url: str, expected: int, out: Any) -> None:
    asyncio.run(_replay(url, expected, out))


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
        reader = ctx.Process(target=replay_process, args=(replay_url, replay, out))
        reader.start()
        replay_s = await asyncio.to_thread(out.get, True, 300)
        await asyncio.to_thread(reader.join, 30)
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
