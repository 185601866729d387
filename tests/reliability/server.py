"""A real `agent-api serve` for fault tests: started, killed and restarted on one data dir and port, plus what the
tests read around it (the SQLite file, the process table). Builds on `tests.test_cli.Server`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.test_cli import DB_FILE, Server, _env, _free_port

ADMIN, ADMIN_PASSWORD = "boss", "boss-password-123"
START_TIMEOUT_S = 180  # two cores shared with other test runs; a start is ~5 s alone
T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, what: str = "condition") -> T:
    """`check()`'s first truthy value, or a failure naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s (last value: {value!r})"
        time.sleep(0.05)


class Service:
    """One data dir served by successive `agent-api serve` processes on the same port."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.port = _free_port()
        self.env = _env(self.data_dir, AGENT_API_ADMIN_USERNAME=ADMIN, AGENT_API_ADMIN_PASSWORD=ADMIN_PASSWORD, **env)
        self.runs = 0
        self.server: Server | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.server is not None
        return self.server.proc

    def start(self) -> None:
        self.runs += 1
        logs = self.tmp_path / f"run-{self.runs}"  # each run keeps its own output
        logs.mkdir()
        self.server = Server(self.data_dir, self.port, logs, self.env)
        self.server.wait_healthy(timeout_s=START_TIMEOUT_S)

    def output(self) -> str:
        return self.server.output() if self.server else "(never started)"

    def kill_9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM; the exit code, or a failure when the process outlives `timeout_s`."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"agent-api serve did not exit within {timeout_s}s of SIGTERM\n{self.output()}")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.http.close()

    def login(self, username: str = ADMIN, password: str = ADMIN_PASSWORD) -> dict[str, str]:
        r = self.http.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, f"{r.text}\n{self.output()}"
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def add_user(self, admin: dict[str, str], name: str) -> dict[str, str]:
        password = f"{name}-password-123"
        r = self.http.post("/api/v1/admin/users", json={"username": name, "password": password}, headers=admin)
        assert r.status_code == 201, r.text
        return self.login(name, password)

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.data_dir / DB_FILE, timeout=30) as conn:
            return conn.execute(sql, params).fetchall()

    def workdir(self, session_id: str) -> Path:
        return self.data_dir / "workdirs" / session_id


def hex_id(value: str) -> str:
    """How the SQLite schema stores a UUID."""
    return value.replace("-", "")


def fill_workdir(path: Path, dirs: int = 200, files_per_dir: int = 100, size: int = 2048) -> int:
    """Many small files: what makes a copy or an archive take seconds (per-file work dominates)."""
    for i in range(dirs):
        sub = path / f"d{i:03}"
        sub.mkdir(parents=True, exist_ok=True)
        for j in range(files_per_dir):
            (sub / f"f{j:03}.txt").write_bytes(bytes([65 + j % 26]) * size)
    return dirs * files_per_dir


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


# The process table, read from /proc: (pid, start time) identifies a process even if its pid is reused.
Proc = tuple[int, int]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live, non-zombie process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> set[Proc]:
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents.setdefault(st[0], []).append(int(entry.name))
            starts[int(entry.name)] = st[1]
    found, todo = set(), [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child in starts:
                found.add((child, starts[child]))
                todo.append(child)
    return found


def alive(procs: set[Proc]) -> set[Proc]:
    return {(pid, start) for pid, start in procs if (st := _stat(pid)) is not None and st[1] == start}


def processes_using(data_dir: Path) -> set[Proc]:
    """Processes working in the data dir or naming it on their command line or in their environment (an agent
    CLI's CLAUDE_CONFIG_DIR): what an agent started by some server on this data dir looks like."""
    marker = str(data_dir.resolve())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if cwd.startswith(marker) or marker.encode() in text:
            st = _stat(int(entry.name))
            if st is not None:
                found.add((int(entry.name), st[1]))
    return found
