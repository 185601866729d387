"""Read throughput of the REST API against what the machine can do, on SQLite and on PostgreSQL.

    python bench/api.py --sessions 10000 --messages 200000 --seconds 5 --rounds 3
    python bench/api.py --quick                      # a small smoke run
    python bench/api.py --postgres none              # SQLite only
    python bench/api.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Data: `--users` users, `--sessions` sessions spread over them (one in ten terminated) and `--messages` messages,
a third of them in hot sessions of 1,200-5,000 messages owned by the first user; rows are inserted with SQL in bulk.
On PostgreSQL a fresh database is created from the given server URL and dropped at the end.

Three servers per database, each its own process on a loopback port, measured in alternating rounds:
- server: `agent-api serve` (the real application, real HTTP);
- floor: a bare Starlette endpoint under uvicorn running the same SQL as the server's steady state through the same
  driver (aiosqlite / psycopg async, one pool) and returning the rows as JSON: the most a database-backed read can do;
- static: a bare Starlette endpoint returning the server's body, no database at all.
The client is another process: `--concurrency` keep-alive connections on raw sockets, each sending the next request
when the last answer is in. Reported per endpoint: req/s (median of the rounds), p50/p99 latency over all rounds,
and the ratio of the server's req/s to the floor's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PASSWORD = "bench-password-1"
HOT_SIZES = (5000, 3500, 2400, 1200)
SECRET = "bench-secret-" + "x" * 60
SESSION_COLUMNS = (
    "id, user_id, name, description, status, template_id, system_prompt, allowed_tools, disallowed_tools, "
    "blocked_commands, permission_mode, permission_timeout_s, on_permission_timeout, sdk_options, mcp_server_ids, "
    "mcp_status, metadata, parent_session_id, is_fork, model, message_count, tool_call_count, turn_count, "
    "total_cost_usd, total_input_tokens, total_output_tokens, created_at, updated_at, started_at, completed_at, "
    "error_message"
)
MESSAGE_COLUMNS = "id, session_id, turn_id, role, content, text, model, created_at"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- data ------------------------------------------------------------------------------------------------------------


def build_data(url: str, users: int, sessions: int, messages: int) -> dict[str, Any]:
    """Insert the data set in bulk through the synchronous driver; returns ids the endpoints need."""
    from agent_api import migrate, security
    from agent_api.models import Message, Session, User

    migrate.upgrade(url)
    sync_url = make_url(url).set(drivername="sqlite" if url.startswith("sqlite") else "postgresql+psycopg")
    engine = sa.create_engine(sync_url)
    now = datetime.now(UTC) - timedelta(days=30)
    password_hash = security.hash_password(PASSWORD)
    user_rows = [
        {"id": uuid.uuid4(), "username": f"bench{i}", "email": f"bench{i}@example.com", "password_hash": password_hash}
        for i in range(users)
    ]
    hot_budget = messages // 3
    hot_counts: list[int] = []
    while hot_budget >= HOT_SIZES[-1] and len(hot_counts) < sessions:
        size = HOT_SIZES[len(hot_counts) % len(HOT_SIZES)]
        size = min(size, hot_budget)
        hot_counts.append(size)
        hot_budget -= size
    cold = max(sessions - len(hot_counts), 1)
    cold_each, cold_extra = divmod(messages - sum(hot_counts), cold)
    session_rows: list[dict[str, Any]] = []
    counts: list[int] = []
    for i in range(sessions):
        hot = i < len(hot_counts)
        owner = user_rows[0 if hot else i % users]["id"]
        count = hot_counts[i] if hot else cold_each + (1 if i - len(hot_counts) < cold_extra else 0)
        created = now + timedelta(seconds=i * 7)
        session_rows.append(
            {
                "id": uuid.uuid4(),
                "user_id": owner,
                "name": f"session {i}",
                "status": "terminated" if i % 10 == 9 else "active",
                "sdk_options": {"model": "claude-sonnet-4-5"},
                "meta": {"bench": True},
                "model": "offline",
                "message_count": count,
                "turn_count": count // 2,
                "total_cost_usd": 0.0123 * count,
                "total_input_tokens": 120 * count,
                "total_output_tokens": 80 * count,
                "created_at": created,
                "updated_at": created,
                "started_at": created,
            }
        )
        counts.append(count)
    with engine.begin() as conn:
        conn.execute(sa.insert(User), user_rows)
        conn.execute(sa.insert(Session), session_rows)
        batch: list[dict[str, Any]] = []
        for row, count in zip(session_rows, counts, strict=True):
            for n in range(count):
                text = f"message {n} of {row['name']}: " + "lorem ipsum dolor sit amet " * 6
                batch.append(
                    {
                        "id": uuid.uuid4(),
                        "session_id": row["id"],
                        "role": "user" if n % 2 == 0 else "assistant",
                        "content": [{"type": "text", "text": text}],
                        "text": text,
                        "model": None if n % 2 == 0 else "offline",
                        "created_at": row["created_at"] + timedelta(milliseconds=n * 10),
                    }
                )
                if len(batch) >= 20_000:
                    conn.execute(sa.insert(Message), batch)
                    batch.clear()
        if batch:
            conn.execute(sa.insert(Message), batch)
        if not url.startswith("sqlite"):
            conn.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if not url.startswith("sqlite") else "ANALYZE")
    engine.dispose()
    return {"user_id": str(user_rows[0]["id"]), "hot_session": str(session_rows[0]["id"])}


# --- the servers -----------------------------------------------------------------------------------------------------


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not start")


def start_server(url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "AGENT_API_DATA_DIR": str(data_dir),
        "AGENT_API_DATABASE_URL": url,
        "AGENT_API_HOST": "127.0.0.1",
        "AGENT_API_PORT": str(port),
        "AGENT_API_SECRET_KEY": SECRET,
        "AGENT_API_LOG_LEVEL": "WARNING",
        "AGENT_API_SCHEDULER_ENABLED": "false",
        "AGENT_API_LOGIN_MAX_FAILURES_PER_IP": "1000",
    }
    agent_api = Path(sys.executable).with_name("agent-api")
    proc = subprocess.Popen([str(agent_api), "serve"], env=env)
    wait_ready(port, "/api/v1/health", proc)
    return proc, port


def start_baseline(kind: str, spec_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-baseline", kind, str(spec_file), str(port)])
    wait_ready(port, "/ready", proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_baseline(kind: str, spec_file: str, port: int) -> None:
    """A bare Starlette app: `static` answers each endpoint's recorded body; `floor` runs its SQL for every request."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    spec = json.loads(Path(spec_file).read_text())
    endpoints: dict[str, dict[str, Any]] = {e["path"]: e for e in spec["endpoints"]}
    pool: asyncio.Queue[Any] = asyncio.Queue()
    sqlite = spec["url"].startswith("sqlite")

    async def open_pool() -> None:
        for _ in range(spec["pool_size"]):
            if sqlite:
                import aiosqlite

                conn = await aiosqlite.connect(make_url(spec["url"]).database, isolation_level=None)
                await conn.execute("PRAGMA journal_mode=WAL")
            else:
                import psycopg

                dsn = make_url(spec["url"]).set(drivername="postgresql").render_as_string(hide_password=False)
                conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            pool.put_nowait(conn)

    async def run(sql: str, params: list[Any]) -> list[dict[str, Any]]:
        conn = await pool.get()
        try:
            if sqlite:
                async with conn.execute(sql, params) as cur:
                    rows = await cur.fetchall()
                    names = [d[0] for d in cur.description]
            else:
                cur = await conn.execute(sql.replace("?", "%s"), params)
                rows = await cur.fetchall()
                names = [d.name for d in cur.description]
        finally:
            pool.put_nowait(conn)
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def handle(request: Request) -> Response:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        endpoint = endpoints[path]
        if kind == "static" or not endpoint["sql"]:
            return Response(endpoint["body"].encode(), media_type="application/json")
        results = [await run(sql, params) for sql, params in endpoint["sql"]]
        body = {"items": results[-1], "results": results[:-1]}
        return Response(json.dumps(body, default=str).encode(), media_type="application/json")

    async def ready(_request: Request) -> Response:
        return Response(b"ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if kind == "floor":
            await open_pool()
        yield

    app = Starlette(routes=[Route("/ready", ready), Route("/{path:path}", handle)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the load client -------------------------------------------------------------------------------------------------


async def _load(port: int, path: str, headers: str, concurrency: int, seconds: float) -> tuple[int, list[float], int]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        while True:
            started = time.perf_counter()
            if started >= deadline:
                break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def _client(port: int, path: str, headers: str, concurrency: int, seconds: float, out: Any) -> None:
    import uvloop

    out.put(uvloop.run(_load(port, path, headers, concurrency, seconds)))


def measure(port: int, path: str, token: str, concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    """Requests per second, latencies and non-200 answers of one timed run from a client process."""
    out: Any = multiprocessing.get_context("spawn").Queue()
    headers = f"Authorization: Bearer {token}\r\n"
    proc = multiprocessing.get_context("spawn").Process(
        target=_client, args=(port, path, headers, concurrency, seconds, out)
    )
    proc.start()
    count, latencies, errors = out.get()
    proc.join()
    return count / seconds, latencies, errors


# --- one database ----------------------------------------------------------------------------------------------------


def endpoints(ids: dict[str, Any], sqlite: bool) -> list[dict[str, Any]]:
    """Each endpoint with the SQL the server runs for it once the caller's login is cached."""
    hot, user = ids["hot_session"], ids["user_id"]
    if sqlite:  # the SQLite dialect stores UUIDs as 32 hex digits
        hot, user = uuid.UUID(hot).hex, uuid.UUID(user).hex
    owned = (f"SELECT {SESSION_COLUMNS} FROM sessions WHERE sessions.user_id = ? AND sessions.id = ?", [user, hot])
    live = "sessions.user_id = ? AND sessions.status != 'terminated'"
    out: list[dict[str, Any]] = [
        {"name": "GET /sessions/{id}", "path": f"/api/v1/sessions/{ids['hot_session']}", "sql": [owned]},
        {
            "name": "GET /sessions?page_size=50",
            "path": "/api/v1/sessions?page_size=50",
            "sql": [
                (f"SELECT count(*) FROM sessions WHERE {live}", [user]),
                (
                    f"SELECT {SESSION_COLUMNS} FROM sessions WHERE {live} "
                    "ORDER BY sessions.created_at DESC, sessions.id LIMIT 50 OFFSET 0",
                    [user],
                ),
            ],
        },
    ]
    for page in (1, 10, 50):
        out.append(
            {
                "name": f"GET /sessions/{{id}}/messages?page_size=100&page={page}",
                "path": f"/api/v1/sessions/{ids['hot_session']}/messages?page_size=100&page={page}",
                "sql": [
                    owned,
                    ("SELECT count(*) FROM messages WHERE messages.session_id = ?", [hot]),
                    (
                        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE messages.session_id = ? "
                        f"ORDER BY messages.created_at, messages.id LIMIT 100 OFFSET {(page - 1) * 100}",
                        [hot],
                    ),
                ],
            }
        )
    out.append({"name": "GET /auth/me", "path": "/api/v1/auth/me", "sql": []})
    return out


def bench_database(url: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    label = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
    started = time.perf_counter()
    ids = build_data(url, args.users, args.sessions, args.messages)
    print(f"{label}: data built in {time.perf_counter() - started:.1f} s", flush=True)
    server, server_port = start_server(url, workdir / "data")
    procs = [server]
    try:
        login = httpx.post(
            f"http://127.0.0.1:{server_port}/api/v1/auth/login", json={"username": "bench0", "password": PASSWORD}
        )
        login.raise_for_status()
        token = login.json()["access_token"]
        spec = endpoints(ids, url.startswith("sqlite"))
        for e in spec:
            answer = httpx.get(
                f"http://127.0.0.1:{server_port}{e['path']}", headers={"Authorization": f"Bearer {token}"}
            )
            answer.raise_for_status()
            e["body"] = answer.text
        spec_file = workdir / "spec.json"
        spec_file.write_text(json.dumps({"url": url, "pool_size": args.concurrency, "endpoints": spec}))
        floor, floor_port = start_baseline("floor", spec_file)
        procs.append(floor)
        static, static_port = start_baseline("static", spec_file)
        procs.append(static)
        targets = {"server": server_port, "floor": floor_port, "static": static_port}
        runs: dict[tuple[str, str], list[tuple[float, list[float], int]]] = {}
        for round_ in range(args.rounds):
            for e in spec:
                for target, port in targets.items():
                    measure(port, e["path"], token, args.concurrency, min(0.5, args.seconds))  # warm-up
                    runs.setdefault((e["name"], target), []).append(
                        measure(port, e["path"], token, args.concurrency, args.seconds)
                    )
            print(f"{label}: round {round_ + 1}/{args.rounds} done", flush=True)
    finally:
        for proc in procs:
            stop(proc)
    rows = []
    for e in spec:
        row: dict[str, Any] = {"endpoint": e["name"]}
        for target in targets:
            results = runs[(e["name"], target)]
            latencies = sorted(x for r in results for x in r[1])
            row[target] = {
                "rps": statistics.median(r[0] for r in results),
                "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                "errors": sum(r[2] for r in results),
            }
        row["ratio"] = row["server"]["rps"] / row["floor"]["rps"]
        rows.append(row)
    return rows


def print_table(label: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{label}\n")
    print("| endpoint | server req/s (p50/p99 ms) | same-SQL floor req/s (p50/p99 ms) | bare static req/s | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        s, f, b = r["server"], r["floor"], r["static"]
        errors = f" **{s['errors']} errors**" if s["errors"] else ""
        print(
            f"| `{r['endpoint']}` | {s['rps']:,.0f} ({s['p50_ms']:.1f}/{s['p99_ms']:.1f}){errors} "
            f"| {f['rps']:,.0f} ({f['p50_ms']:.1f}/{f['p99_ms']:.1f}) | {b['rps']:,.0f} | {r['ratio']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a PostgreSQL server URL, or `none`")
    parser.add_argument("--quick", action="store_true", help="small data, short runs: a smoke test")
    parser.add_argument("--serve-baseline", nargs=3, metavar=("KIND", "SPEC", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        kind, spec_file, port = args.serve_baseline
        serve_baseline(kind, spec_file, int(port))
        return
    if args.quick:
        args.sessions, args.messages, args.seconds, args.rounds = 500, 12_000, 1.0, 1
    results: list[tuple[str, list[dict[str, Any]]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        sqlite_dir = Path(tmp) / "sqlite"
        sqlite_dir.mkdir()
        results.append(("SQLite", bench_database(f"sqlite+aiosqlite:///{sqlite_dir / 'bench.db'}", args, sqlite_dir)))
        if args.postgres != "none":
            results.append(("PostgreSQL", bench_postgres(args, Path(tmp) / "postgres")))
    for label, rows in results:
        print_table(
            f"{label}: {args.sessions:,} sessions, {args.messages:,} messages, {args.users} users, "
            f"concurrency {args.concurrency}, {args.rounds} rounds of {args.seconds:g} s",
            rows,
        )


def bench_postgres(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    import psycopg

    workdir.mkdir()
    name = f"agent_api_bench_{secrets.token_hex(4)}"
    admin = make_url(args.postgres).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(args.postgres).set(drivername="postgresql+psycopg", database=name)
    try:
        return bench_database(url.render_as_string(hide_password=False), args, workdir)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
