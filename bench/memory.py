"""Memory of the server process itself: idle, at its start-up peak and after a mix of requests, against a bare app.

    python bench/memory.py                   # 1,000 requests
    python bench/memory.py --quick           # 200 requests: a smoke run
    python bench/memory.py --requests 5000

Only the `agent-api serve` process is measured (VmRSS and VmHWM of /proc/<pid>/status): the agent CLI processes it
starts are not counted. Its data dir is fresh, its database SQLite, its port a free loopback one, with no spare
agents (`AGENT_API_SPARE_AGENTS=0`) and no model key (the built-in offline model). It is started three times:
- first start: the empty database is migrated in the process, then the admin is created;
- restart: the same data dir again, nothing left to migrate: what a server spends most of its life as. The requests
  go to this one;
- restart with the default of one spare agent (idle only): the spare's start loads the agent SDK at boot.
Idle is the RSS once it stops changing (RSS sampled every 0.25 s until it moved by less than 64 KiB over 3 s, within
a deadline), the start-up peak is VmHWM then. The requests are sent one after the other over one keep-alive HTTP
connection from this process: log in, then a mix of the read and CRUD endpoints of a user's day (sessions, their
messages, session templates, tasks, webhooks, reports as JSON, health) and of the admin pages. No message is sent to
an agent, but creating a session starts its agent process ahead of its first message (within the per-user cap; the
older idle ones are closed): the table says how many were alive at the measurement, outside the figures.
The baseline is a bare Starlette app under uvicorn in its own process, measured the same way: idle, then after the
same number of trivial JSON requests.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TARGET_IDLE_MIB = 110
ADMIN = "bench-admin"
PASSWORD = "bench-password-1"
SECRET = "bench-secret-" + "x" * 60
SETTLE_WINDOW_S = 3.0
SETTLE_TOLERANCE_KIB = 64
SETTLE_DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- /proc -----------------------------------------------------------------------------------------------------------


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of one process (KiB), its children not included."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> int:
    """How many processes `pid` started and that still run: the agent CLIs (each in its sandbox wrapper)."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            count += int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid
        except (OSError, IndexError, ValueError):
            continue
    return count


def settle(pid: int) -> tuple[int, bool]:
    """The RSS (KiB) once it has moved by less than SETTLE_TOLERANCE_KIB over SETTLE_WINDOW_S; whether it did
    before the deadline (else the last sample)."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    while True:
        now = time.monotonic()
        samples.append((now, status_kib(pid)["VmRSS"]))
        window = [rss for t, rss in samples if t >= now - SETTLE_WINDOW_S]
        if samples[0][0] <= now - SETTLE_WINDOW_S and max(window) - min(window) < SETTLE_TOLERANCE_KIB:
            return samples[-1][1], True
        if now > deadline:
            return samples[-1][1], False
        time.sleep(0.25)


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
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def start_server(data_dir: Path, spare_agents: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_API_", "ANTHROPIC_"))}
    env.update(
        {
            "AGENT_API_DATA_DIR": str(data_dir),
            "AGENT_API_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'agent-api.db'}",
            "AGENT_API_HOST": "127.0.0.1",
            "AGENT_API_PORT": str(port),
            "AGENT_API_SECRET_KEY": SECRET,
            "AGENT_API_LOG_LEVEL": "WARNING",
            "AGENT_API_SPARE_AGENTS": str(spare_agents),
            "AGENT_API_ADMIN_USERNAME": ADMIN,
            "AGENT_API_ADMIN_PASSWORD": PASSWORD,
        }
    )
    agent_api = Path(sys.executable).with_name("agent-api")
    proc = subprocess.Popen([str(agent_api), "serve"], env=env)
    wait_ready(port, "/api/v1/health", proc)
    return proc, port


def start_baseline() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(port)])
    wait_ready(port, "/ready", proc)
    return proc, port


def serve_baseline(port: int) -> None:
    """A bare Starlette app under uvicorn: what any ASGI server of this stack holds before doing anything."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def ready(_request: Request) -> Response:
        return Response(b"ok")

    async def item(request: Request) -> Response:
        return JSONResponse({"id": request.path_params["n"], "name": "item", "tags": ["a", "b"]})

    app = Starlette(routes=[Route("/ready", ready), Route("/items/{n:int}", item)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the requests ----------------------------------------------------------------------------------------------------


@dataclass
class Mix:
    """A user's requests in a repeating cycle, an admin's every few; ids created along the way are reused."""

    http: httpx.Client
    user: dict[str, str] = field(default_factory=dict)
    admin: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    sent: int = 0

    def call(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        r = self.http.request(method, "/api/v1" + path, headers=headers, **kwargs)
        self.sent += 1
        if r.status_code >= 400:
            self.failures.append(f"{method} {path} -> {r.status_code} {r.text[:200]}")
            return None
        return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else None

    def login(self, username: str) -> dict[str, str]:
        body = self.call("POST", "/auth/login", {}, json={"username": username, "password": PASSWORD})
        return {"Authorization": f"Bearer {body['access_token']}"}

    def setup(self) -> None:
        """There is no sign-up: the admin (made at first start) creates the user, and both log in."""
        self.admin = self.login(ADMIN)
        self.call("POST", "/admin/users", self.admin, json={"username": "bench-user", "password": PASSWORD})
        self.user = self.login("bench-user")

    def new_session(self) -> None:
        body = self.call("POST", "/sessions", self.user, json={"name": f"bench {len(self.sessions)}"})
        self.sessions.append(body["id"])

    def template_crud(self) -> None:
        t = {"name": f"template {len(self.templates)}", "description": "bench", "tags": ["bench"]}
        body = self.call("POST", "/session-templates", self.user, json=t)
        self.call("GET", f"/session-templates/{body['id']}", self.user)
        self.call("PUT", f"/session-templates/{body['id']}", self.user, json={**t, "description": "edited"})
        if len(self.templates) >= 5:  # keep a few, delete the oldest
            self.call("DELETE", f"/session-templates/{self.templates.pop(0)}", self.user)
        self.templates.append(body["id"])

    def report(self) -> None:
        body = self.call("POST", f"/sessions/{self.sessions[-1]}/report", self.user, json={"title": "bench"})
        self.reports.append(body["id"])
        self.call("GET", f"/reports/{body['id']}/download?format=json", self.user)

    def steps(self) -> Iterator[Callable[[], object]]:
        u, a = self.user, self.admin
        sid = lambda: self.sessions[-1]  # noqa: E731
        cycle: list[Callable[[], object]] = [
            self.new_session,
            lambda: self.call("GET", "/auth/me", u),
            lambda: self.call("GET", "/sessions?page_size=20", u),
            lambda: self.call("GET", f"/sessions/{sid()}", u),
            lambda: self.call("GET", f"/sessions/{sid()}/messages", u),
            lambda: self.call("GET", "/session-templates", u),
            self.template_crud,
            lambda: self.call("GET", "/tasks", u),
            lambda: self.call("GET", "/webhooks", u),
            lambda: self.call("GET", "/monitoring/health", u),
            lambda: self.call("GET", "/reports", u),
            lambda: self.call("GET", "/admin/stats", a),
            lambda: self.call("GET", "/admin/users", a),
            lambda: self.call("GET", "/admin/sessions?page_size=20", a),
            lambda: self.call("GET", "/admin/audit?page_size=20", a),
            lambda: self.call("GET", "/auth/me", u),
            lambda: self.call("GET", "/sessions?page_size=50&status=active", u),
            lambda: self.call("GET", f"/sessions/{sid()}/messages?page_size=50", u),
            lambda: self.call("GET", "/monitoring/health", u),
        ]
        for n, step in enumerate(itertools.cycle(cycle)):
            if n % (4 * len(cycle)) == len(cycle) - 1:
                yield self.report  # a report of the newest session now and then, downloaded as JSON
            yield step


def send_requests(port: int, count: int) -> Mix:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        mix = Mix(http)
        mix.setup()
        for step in mix.steps():
            if mix.sent >= count:
                break
            step()
    return mix


def send_trivial(port: int, count: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        for n in range(count):
            http.get(f"/items/{n}").raise_for_status()


# --- the run ---------------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    idle_kib: int
    settled: bool
    start_peak_kib: int
    after_kib: int | None = None
    after_peak_kib: int | None = None
    agents: int = 0


def measure_idle(proc: subprocess.Popen[bytes]) -> Figures:
    idle, settled = settle(proc.pid)
    return Figures(idle, settled, status_kib(proc.pid)["VmHWM"])


def measure_after(proc: subprocess.Popen[bytes], figures: Figures) -> None:
    # The figure right after the last answer (no settling: what the requests left, before any idle reaper runs).
    after = status_kib(proc.pid)
    figures.after_kib, figures.after_peak_kib = after["VmRSS"], after["VmHWM"]
    figures.agents = children(proc.pid)


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "?",
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {mem_kib / 1024 / 1024:.1f} GiB RAM; Linux {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="200 requests: a smoke run")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    if args.quick:
        args.requests = 200
    rows: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        data_dir = Path(tmp) / "data"
        proc, _port = start_server(data_dir)
        try:
            rows["agent-api, first start (migrates the empty database)"] = measure_idle(proc)
        finally:
            stop(proc)
        proc, port = start_server(data_dir)
        try:
            figures = rows["agent-api, restart (database already at head)"] = measure_idle(proc)
            started = time.perf_counter()
            mix = send_requests(port, args.requests)
            measure_after(proc, figures)
            took = time.perf_counter() - started
        finally:
            stop(proc)
        # The default configuration keeps one spare agent, started at boot: the agent SDK is loaded at once.
        proc, _port = start_server(data_dir, spare_agents=1)
        try:
            rows["agent-api, restart with the default spare agent"] = measure_idle(proc)
        finally:
            stop(proc)
    proc, port = start_baseline()
    try:
        figures = rows["bare Starlette + uvicorn"] = measure_idle(proc)
        send_trivial(port, args.requests)
        measure_after(proc, figures)
    finally:
        stop(proc)

    print(f"\nServer process memory (MiB; its agent CLI processes not counted). {machine()}\n")
    print(f"| process | idle RSS | start peak (VmHWM) | RSS after {args.requests:,} requests | peak after |")
    print("|---|---|---|---|---|")
    for name, f in rows.items():
        unsettled = " (still moving)" if not f.settled else ""
        print(
            f"| {name} | {mib(f.idle_kib)}{unsettled} | {mib(f.start_peak_kib)} | {mib(f.after_kib)} "
            f"| {mib(f.after_peak_kib)} |"
        )
    restart = rows["agent-api, restart (database already at head)"]
    met = "met" if restart.idle_kib <= TARGET_IDLE_MIB * 1024 else "NOT met"
    print(f"\nTarget: idle RSS <= {TARGET_IDLE_MIB} MiB (restart): {met}.")
    print("Peaks: each password hash (the admin made at first start, every login) takes Argon2's 64 MiB for a moment.")
    created = len(mix.sessions)
    print(
        f"Requests: {mix.sent:,} to agent-api in {took:.1f} s ({created} sessions created, "
        f"{len(mix.templates)} templates kept, {len(mix.reports)} JSON reports); "
        f"agent CLI processes alive after them: {restart.agents} (outside the figures)."
    )
    if mix.failures:
        print(f"\n{len(mix.failures)} requests FAILED, first ones:")
        for failure in mix.failures[:10]:
            print(f"- {failure}")
        sys.exit(1)


if __name__ == "__main__":
    main()
