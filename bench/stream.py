"""Stream fan-out and replay on the embedded default (SQLite, in-process bus, one server process), against a bare
Starlette broadcast of the same frames to the same clients, in the same run.

    python bench/stream.py --subscribers 100 --events 1000 --replay 10000 --pace-ms 20
    python bench/stream.py --quick

agent-api (uvicorn, the real app) and its event writer run in this process. The baseline is a minimal Starlette app
(no FastAPI, no database, no auth) under uvicorn with the same options, in a child process; it sends the bytes of a
frame captured from agent-api, with its own numbers in it. The subscribers run in child processes and read frames off
plain sockets (a lean client, so that 100 of them on a 2-core machine leave the server its share of the CPU), the same
code for both servers. Each event carries its commit time (the baseline's: the moment it was made); latency is receipt
time minus that, per subscriber per event. Replay: a fresh connection with `?after_seq=0` on a session holding
`--replay` events, from another process, timed until the last one arrives; the baseline sends as many frames back to
back. Each round measures both servers, in alternating order, so that a change in the machine's load hits both. Both
run on the event loop `agent-api serve` picks (`--loop auto`: uvloop when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import platform
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

# Children are spawned and import this module again: agent_api, httpx and starlette are imported where they are used,
# so that subscribers start in a second rather than many, and the baseline server holds nothing of agent-api.

QUICK = {"subscribers": 10, "events": 100, "replay": 1000, "pace_ms": 5.0, "rounds": 1}


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


async def _frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
    """Text payloads of server frames (unmasked, unfragmented: what this server sends). Pings are answered: both
    servers ping every 20 s and close a connection that has not answered within 20 s more, which a subscriber
    connected early in a long round on a loaded machine reaches."""
    while True:
        head = await reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        opcode = head[0] & 0x0F
        if opcode == 0x1:
            yield payload
        elif opcode == 0x9:  # a pong (FIN, opcode 0xA) with the ping's payload, masked as client frames must be
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)


async def _subscribe_all(url: str, count: int, expected: int, ready: Any, out: Any) -> None:
    async def one() -> list[float]:
        latencies: list[float] = []
        reader, writer = await _open(url)
        frames = _frames(reader, writer)
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
    async for payload in _frames(reader, writer):
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
    from agent_api.event_log import append_event

    db = app.state.agent_api.db
    for i in range(0, n, per_tx):
        async with db.transaction() as s:
            for j in range(per_tx):
                await append_event(s, session_id, "bench", {"i": i + j, "committed_at": time.time()})
        if pace_s:
            await asyncio.sleep(pace_s)


def bench_frame(template: dict[str, Any], seq: int, i: int, at: float) -> str:
    """A frame of agent-api's (`template`, captured) with another seq and data: same keys, same order, same size."""
    return json.dumps({**template, "seq": seq, "data": {"i": i, "committed_at": at}}, separators=(",", ":"))


def bare_server_process(
    port: int, options: dict[str, Any], connected: str, template: dict[str, Any], replay: int
) -> None:
    """The baseline: the same frames over the same uvicorn WebSocket stack with nothing of agent-api in between. One
    inbox per subscriber, as agent-api has, so that a slow client holds up only itself."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    inboxes: set[asyncio.Queue[str | None]] = set()
    # Made before anyone connects: the replay baseline is the cost of sending the frames, the floor for any server.
    replay_frames = [bench_frame(template, i + 1, i, time.time()) for i in range(replay)]

    async def fan(ws: WebSocket) -> None:
        inbox: asyncio.Queue[str | None] = asyncio.Queue()
        inboxes.add(inbox)  # before `connected`: a client that has it gets every frame broadcast from then on
        try:
            await ws.accept()
            await ws.send_text(connected)
            while (text := await inbox.get()) is not None:
                await ws.send_text(text)
        finally:
            inboxes.discard(inbox)

    async def broadcast(request: Request) -> PlainTextResponse:
        events, pace_s = int(request.query_params["events"]), float(request.query_params["pace_ms"]) / 1000
        for i in range(events):
            text = bench_frame(template, i + 1, i, time.time())  # stamped as agent-api's writer stamps commit time
            for inbox in inboxes:
                inbox.put_nowait(text)
            if pace_s:
                await asyncio.sleep(pace_s)
        for inbox in inboxes:
            inbox.put_nowait(None)  # the round is over: end its connections
        return PlainTextResponse("sent")

    async def replay_stream(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(connected)
        for text in replay_frames:
            await ws.send_text(text)

    app = Starlette(
        routes=[
            Route("/broadcast", broadcast, methods=["POST"]),
            WebSocketRoute("/fan", fan),
            WebSocketRoute("/replay", replay_stream),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, **options)


async def first_frames(url: str) -> tuple[str, str]:
    """The `connected` frame and the first event frame of a real stream: the bytes the baseline sends."""
    reader, writer = await _open(url)
    frames = _frames(reader, writer)
    connected = await anext(frames)
    async for event in frames:  # after the session's own events (its status changes)
        if b'"type":"bench"' in event:
            writer.close()
            return connected.decode(), event.decode()
    raise AssertionError("no bench event in the stream")


async def agent_started(client: Any, headers: dict[str, str], session_id: str) -> None:
    """A new session starts its agent process (a CLI) at once: let that start-up, and the status events it writes, be
    over before anything is measured."""
    for _ in range(600):  # up to 2 minutes on a loaded machine
        status = (await client.get(f"/api/v1/sessions/{session_id}", headers=headers)).json()["status"]
        if status not in ("created", "connecting"):
            return
        await asyncio.sleep(0.2)


async def wait_listening(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def fan_out(
    ctx: Any, url: str, trigger: Callable[[], Awaitable[None]], subscribers: int, events: int, client_procs: int
) -> list[float]:
    ready, out = ctx.Queue(), ctx.Queue()
    shares = [subscribers // client_procs + (i < subscribers % client_procs) for i in range(client_procs)]
    children = [
        ctx.Process(target=subscriber_process, args=(url, n, events, ready, out), daemon=True) for n in shares if n
    ]
    for child in children:
        child.start()
    for _ in range(subscribers):
        await asyncio.to_thread(ready.get, True, 120)
    await trigger()
    latencies: list[float] = []
    for _ in children:
        latencies.extend(await asyncio.to_thread(out.get, True, 300))
    for child in children:
        await asyncio.to_thread(child.join, 30)
    assert len(latencies) == subscribers * events, (len(latencies), subscribers * events)
    return latencies


async def replay_once(ctx: Any, url: str, expected: int) -> float:
    out = ctx.Queue()
    reader = ctx.Process(target=replay_process, args=(url, expected, out), daemon=True)
    reader.start()
    replay_s: float = await asyncio.to_thread(out.get, True, 300)
    await asyncio.to_thread(reader.join, 30)
    return replay_s


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


async def main(args: argparse.Namespace) -> None:
    import httpx

    from agent_api.app import create_app
    from agent_api.cli import UVICORN_OPTIONS
    from agent_api.config import Settings

    load_before = os.getloadavg()
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="bench-stream-")),
        admin_username="bench",
        admin_password="bench-password",
        log_level="WARNING",
        max_streams_per_user=0,  # all subscribers are one user: the default cap (20) would refuse the 21st
        spare_agents=0,  # no agent CLI starting in the background of the measurement
    )
    app = create_app(settings)
    port, bare_port = free_port(), free_port()
    pace_s = args.pace_ms / 1000
    ctx = multiprocessing.get_context("spawn")
    # The options of `agent-api serve` that matter here (the WebSocket implementation and its pings), for both servers;
    # the loop is this process's for agent-api and `args.loop` for the baseline, the same one.
    options: dict[str, Any] = {**UVICORN_OPTIONS, "lifespan": "off", "log_level": "warning"}
    async with app.router.lifespan_context(app):
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            login = await client.post("/api/v1/auth/login", json={"username": "bench", "password": "bench-password"})
            token = login.json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            fan, store, sample = [
                (await client.post("/api/v1/sessions", json={}, headers=headers)).json()["id"] for _ in range(3)
            ]
            for sid in (fan, store, sample):
                await agent_started(client, headers, sid)
        stream = f"ws://127.0.0.1:{port}/api/v1/sessions/{{}}/stream?token={token}"
        await write(app, uuid.UUID(sample), 1, 0)
        connected, frame = await first_frames(stream.format(sample) + "&after_seq=0")
        await write(app, uuid.UUID(store), args.replay, 0, per_tx=500)

        # Daemonic, as the clients are: a run that fails ends them instead of waiting for them at exit.
        bare = ctx.Process(
            target=bare_server_process,
            args=(bare_port, {**options, "loop": args.loop}, connected, json.loads(frame), args.replay),
            daemon=True,
        )
        bare.start()
        await wait_listening(bare_port)
        print(f"agent-api server: pid {os.getpid()} (with its writer); bare Starlette server: pid {bare.pid}")

        # One client for all rounds: making one loads the CA bundle, CPU better spent outside the rounds.
        bare_client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{bare_port}", timeout=None)

        async def broadcast() -> None:
            params = {"events": args.events, "pace_ms": args.pace_ms}
            (await bare_client.post("/broadcast", params=params)).raise_for_status()

        targets = {
            "agent-api": (stream.format(fan), lambda: write(app, uuid.UUID(fan), args.events, pace_s)),
            "bare": (f"ws://127.0.0.1:{bare_port}/fan", broadcast),
        }
        replay_urls = {"agent-api": stream.format(store) + "&after_seq=0", "bare": f"ws://127.0.0.1:{bare_port}/replay"}
        latencies: dict[str, list[float]] = {name: [] for name in targets}
        round_p99s: dict[str, list[float]] = {name: [] for name in targets}
        replays: dict[str, list[float]] = {name: [] for name in targets}
        for r in range(args.rounds):
            order = ["bare", "agent-api"] if r % 2 == 0 else ["agent-api", "bare"]
            for name in order:
                url, trigger = targets[name]
                got = await fan_out(ctx, url, trigger, args.subscribers, args.events, args.client_procs)
                latencies[name].extend(got)
                round_p99s[name].append(pct(got, 0.99) * 1000)
            for name in order:
                replays[name].append(await replay_once(ctx, replay_urls[name], args.replay))
            print(
                f"round {r + 1}: "
                + "; ".join(f"{n} p99 {round_p99s[n][-1]:.2f} ms, replay {replays[n][-1]:.3f} s" for n in order)
            )
        await bare_client.aclose()
        bare.terminate()
        await asyncio.to_thread(bare.join, 30)
        server.should_exit = True
        await serving

    load_after = os.getloadavg()
    report(
        args,
        latencies,
        replays,
        len(frame),
        len(bench_frame(json.loads(frame), 1, 0, time.time())),
        load_before,
        load_after,
    )


def report(
    args: argparse.Namespace,
    latencies: dict[str, list[float]],
    replays: dict[str, list[float]],
    frame_bytes: int,
    bare_frame_bytes: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    ms = {name: [x * 1000 for x in values] for name, values in latencies.items()}
    p50 = {name: statistics.median(values) for name, values in ms.items()}
    p99 = {name: pct(values, 0.99) for name, values in ms.items()}
    replay = {name: statistics.median(values) for name, values in replays.items()}
    p99_met = p99["agent-api"] <= 1.5 * p99["bare"] and p99["agent-api"] < 10
    load = " / ".join(f"{a:.2f} {b:.2f} {c:.2f}" for a, b, c in (load_before, load_after))
    print(
        f"\nmachine: {os.cpu_count()} cores ({cpu_model()}), {platform.platform()}, Python {platform.python_version()}, "
        f"loop {args.loop}; load average (1, 5, 15 min) before / after: {load}"
    )
    print(
        f"{args.subscribers} subscribers in {args.client_procs} processes x {args.events} events ({args.pace_ms} ms "
        f"apart), {args.rounds} round(s) alternating the servers; event frame {frame_bytes} B (agent-api), "
        f"{bare_frame_bytes} B (bare)\n"
    )
    print("| measure | agent-api | bare Starlette | agent-api / bare | target |")
    print("|---|---|---|---|---|")
    print(
        f"| commit to receipt, p50 | {p50['agent-api']:.2f} ms | {p50['bare']:.2f} ms | {p50['agent-api'] / p50['bare']:.2f}x | |"
    )
    print(
        f"| commit to receipt, p99 | {p99['agent-api']:.2f} ms | {p99['bare']:.2f} ms | "
        f"{p99['agent-api'] / p99['bare']:.2f}x | <= 1.5x bare and < 10 ms ({'met' if p99_met else 'missed'}) |"
    )
    print(
        f"| replay of {args.replay} events after reconnect (median of {args.rounds}) | {replay['agent-api']:.3f} s | "
        f"{replay['bare']:.3f} s | {replay['agent-api'] / replay['bare']:.1f}x | "
        f"<= 0.3 s ({'met' if replay['agent-api'] <= 0.3 else 'missed'}) |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--replay", type=int, default=10_000)
    parser.add_argument("--pace-ms", type=float, default=5.0, help="pause between events (one event per transaction)")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the subscribers are spread over")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both servers, in alternating order")
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop of both servers; auto is what `agent-api serve` runs on (uvloop when installed)",
    )
    parser.add_argument("--quick", action="store_true", help=f"a short smoke run: {QUICK} unless given")
    args = parser.parse_args()
    if args.quick:  # explicit options still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    loop_factory = uvicorn.Config(app="", loop=args.loop).get_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main(args))
