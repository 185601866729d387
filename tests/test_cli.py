"""The `agent-api` command, run as a real subprocess on a fresh data dir (the default SQLite file)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from argon2 import PasswordHasher

from agent_api import migrate

AGENT_API = str(Path(sys.executable).with_name("agent-api"))
DB_FILE = "agent-api.db"
COMMAND_TIMEOUT_S = 60


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_API_")}
    env["AGENT_API_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "250"  # rich wraps tables at 80 columns when not on a terminal
    env.update(extra)
    return env


def run(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT_API, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(data_dir),
        cwd=data_dir.parent,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _rows(data_dir: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / DB_FILE) as conn:
        return conn.execute(query).fetchall()


def _head() -> str:
    return ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head() or ""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"  # does not exist yet: the CLI creates it


def test_console_script_is_installed() -> None:
    assert Path(AGENT_API).is_file(), AGENT_API


class TestUsers:
    def test_create_user_and_admin_then_list(self, data_dir: Path) -> None:
        r = run(
            data_dir, "users", "create", "alice", "--email", "a@example.com", "--password-stdin", stdin="alice-pw-123\n"
        )
        assert r.returncode == 0, _describe(r)
        assert "alice" in r.stdout
        r = run(data_dir, "users", "create", "root", "--admin", "--password-stdin", stdin="root-pw-12345\n")
        assert r.returncode == 0, _describe(r)

        rows = _rows(data_dir, "SELECT username, email, role, password_hash FROM users ORDER BY username")
        assert [row[:3] for row in rows] == [("alice", "a@example.com", "user"), ("root", None, "admin")]
        hasher = PasswordHasher()
        # Hashed with argon2, and the trailing newline from stdin is not part of the password.
        assert str(rows[0][3]).startswith("$argon2")
        assert hasher.verify(str(rows[0][3]), "alice-pw-123")
        assert hasher.verify(str(rows[1][3]), "root-pw-12345")

        r = run(data_dir, "users", "list")
        assert r.returncode == 0, _describe(r)
        lines = r.stdout.splitlines()
        alice = [line for line in lines if " alice " in line]
        root = [line for line in lines if " root " in line]
        assert len(alice) == 1 and len(root) == 1, r.stdout
        assert " user " in alice[0] and "a@example.com" in alice[0]
        assert " admin " in root[0]

    def test_duplicate_username_is_refused(self, data_dir: Path) -> None:
        r = run(data_dir, "users", "create", "bob", "--password-stdin", stdin="bob-pw-12345\n")
        assert r.returncode == 0, _describe(r)
        r = run(data_dir, "users", "create", "bob", "--admin", "--password-stdin", stdin="other-pw-12345\n")
        assert r.returncode != 0, _describe(r)
        assert "bob" in r.stderr and "taken" in r.stderr, _describe(r)
        assert "Traceback" not in r.stderr
        assert _rows(data_dir, "SELECT username, role FROM users") == [("bob", "user")]

    def test_duplicate_email_is_refused(self, data_dir: Path) -> None:
        r = run(
            data_dir, "users", "create", "carol", "--email", "c@example.com", "--password-stdin", stdin="carol-pw-1\n"
        )
        assert r.returncode == 0, _describe(r)
        r = run(
            data_dir, "users", "create", "carl", "--email", "C@example.com", "--password-stdin", stdin="carl-pw-12\n"
        )
        assert r.returncode != 0, _describe(r)
        assert "email" in r.stderr.lower(), _describe(r)
        assert _rows(data_dir, "SELECT username FROM users") == [("carol",)]

    def test_short_password_is_refused(self, data_dir: Path) -> None:
        r = run(data_dir, "users", "create", "dave", "--password-stdin", stdin="short\n")
        assert r.returncode != 0, _describe(r)
        assert "password" in r.stderr.lower(), _describe(r)
        assert "Traceback" not in r.stderr
        r = run(data_dir, "users", "list")
        assert r.returncode == 0, _describe(r)
        assert "dave" not in r.stdout

    def test_password_must_come_from_stdin(self, data_dir: Path) -> None:
        r = run(data_dir, "users", "create", "erin")
        assert r.returncode != 0, _describe(r)
        assert "--password-stdin" in r.stderr, _describe(r)

    def test_invalid_username_is_refused(self, data_dir: Path) -> None:
        r = run(data_dir, "users", "create", "no spaces allowed", "--password-stdin", stdin="good-pw-1234\n")
        assert r.returncode != 0, _describe(r)
        assert "username" in r.stderr.lower(), _describe(r)


class TestDb:
    def test_upgrade_on_a_fresh_dir(self, data_dir: Path) -> None:
        assert not data_dir.exists()
        r = run(data_dir, "db", "upgrade")
        assert r.returncode == 0, _describe(r)
        assert (data_dir / DB_FILE).is_file()
        assert _rows(data_dir, "SELECT version_num FROM alembic_version") == [(_head(),)]
        tables = {row[0] for row in _rows(data_dir, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"users", "refresh_token_families", "api_keys"} <= tables
        r = run(data_dir, "db", "upgrade")  # again: nothing to do, still fine
        assert r.returncode == 0, _describe(r)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, port: int, logs: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.base_url = f"http://127.0.0.1:{port}"
        self.stdout_path = logs / "serve.stdout"
        self.stderr_path = logs / "serve.stderr"
        # Files, not pipes: nobody has to drain them while the server runs.
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [AGENT_API, "serve", "--port", str(port)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=logs,
            )

    def output(self) -> str:
        out = self.stdout_path.read_text(errors="replace")
        err = self.stderr_path.read_text(errors="replace")
        return f"exit code {self.proc.poll()}\n--- stdout\n{out}\n--- stderr\n{err}"

    def wait_healthy(self, timeout_s: float) -> httpx.Response:
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"agent-api serve exited before answering\n{self.output()}")
            try:
                r = httpx.get(f"{self.base_url}/api/v1/monitoring/health", timeout=5)
                if r.status_code == 200:
                    return r
                last = f"{r.status_code} {r.text}"
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.1)
        pytest.fail(f"no healthy answer within {timeout_s}s (last: {last!r})\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    data_dir = tmp_path / "data"
    env = _env(
        data_dir,
        AGENT_API_ADMIN_USERNAME="boss",
        AGENT_API_ADMIN_PASSWORD="boss-password-123",
        AGENT_API_ADMIN_EMAIL="boss@example.com",
    )
    server = Server(data_dir, _free_port(), tmp_path, env)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
class TestServe:
    def test_serve_on_a_fresh_data_dir(self, fresh_server: Server) -> None:
        r = fresh_server.wait_healthy(timeout_s=60)
        assert r.json()["checks"]["database"]["status"] == "ok", r.text

        with httpx.Client(base_url=fresh_server.base_url, timeout=10) as http:
            r = http.post("/api/v1/auth/login", json={"username": "boss", "password": "boss-password-123"})
            assert r.status_code == 200, f"{r.text}\n{fresh_server.output()}"
            token = r.json()["access_token"]
            r = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            me = r.json()
            assert me["username"] == "boss"
            assert me["role"] == "admin"
            assert me["email"] == "boss@example.com"

        secret = fresh_server.data_dir / "secret_key"
        assert secret.is_file()
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(secret.read_text().strip()) >= 32
        assert (fresh_server.data_dir / DB_FILE).is_file()

        fresh_server.proc.send_signal(signal.SIGTERM)
        try:
            code = fresh_server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"agent-api serve did not exit within 30s of SIGTERM\n{fresh_server.output()}")
        # uvicorn finishes its graceful shutdown, then re-raises the signal it caught, so the process
        # reports "terminated by SIGTERM"; exiting 0 is fine too. Anything else is a crash.
        output = fresh_server.output()
        assert code in (0, -signal.SIGTERM), output
        assert "Application shutdown complete" in output, output
        assert "Traceback" not in output and '"level": "error"' not in output, output
