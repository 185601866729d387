"""Every turn is billed for what it used, whatever happened to the agent process between turns.

The CLI reports a running total per process, and a resumed process may start from a total its predecessor saved.
The offline model's calls are priced by the CLI at one rate per input-equivalent token, so each turn's cost must be
that rate times its own usage: learned from a session's first turn, checked on every later one.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from agent_api.runtime import costs
from agent_api.sessions import service
from tests.conftest import SessionsApi, app_state, wait_until
from tests.test_cli import DB_FILE, Server, _env, _free_port

pytestmark = pytest.mark.slow


def _rate(done: dict[str, object]) -> float:
    return float(done["cost_usd"]) / costs.weighted_tokens(done["usage"])  # type: ignore[arg-type]


def assert_billed_for_its_usage(done: dict[str, object], rate: float) -> None:
    assert done["turn_status"] == "completed" and done["cost_estimated"] is False, done
    expected = rate * costs.weighted_tokens(done["usage"])  # type: ignore[arg-type]
    assert done["cost_usd"] == pytest.approx(expected, rel=1e-3, abs=2e-6), done


def _agent_pids(cwd: Path) -> list[int]:
    """Processes running in a session's working directory: its agent CLI (and anything that CLI started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == cwd:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def _first_turn(sessions: SessionsApi, **settings: object) -> tuple[dict[str, object], float]:
    s = await sessions.create(permission_mode="bypassPermissions", **settings)
    r = await sessions.query(s["id"], "hello")
    assert r.status_code == 200, r.text
    return s, _rate(r.json())


class TestAcrossAgentProcesses:
    async def test_a_live_process_bills_each_turn_by_difference(self, sessions: SessionsApi) -> None:
        s, rate = await _first_turn(sessions)
        for message in ("run: echo two", "three"):
            r = await sessions.query(s["id"], message)
            assert_billed_for_its_usage(r.json(), rate)

    async def test_after_idle_eviction_the_resumed_process_bills_only_its_turn(
        self, app: object, sessions: SessionsApi
    ) -> None:
        s, rate = await _first_turn(sessions)
        pool = app_state(app).require_agents()
        await pool.close(uuid.UUID(s["id"]))  # what the idle reaper does
        r = await sessions.query(s["id"], "run: echo after eviction")
        assert_billed_for_its_usage(r.json(), rate)

    async def test_a_process_that_dies_between_turns(self, app: object, sessions: SessionsApi) -> None:
        """Killed, it saves no total: the next process starts from nothing, and its turn (larger than all the
        session had spent) used to be billed as the difference."""
        s, rate = await _first_turn(sessions)
        cwd = service.workdir_of(app_state(app), uuid.UUID(s["id"])).resolve()
        pids = _agent_pids(cwd)
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: _gone(pids), timeout=20)
        r = await sessions.query(s["id"], "run: echo one\nrun: echo two")
        assert_billed_for_its_usage(r.json(), rate)

    async def test_a_fork_bills_only_its_own_turns(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s, rate = await _first_turn(sessions)
        r = await sessions.query(s["id"], "run: echo before the fork")
        assert_billed_for_its_usage(r.json(), rate)
        fork = await client.post(f"/api/v1/sessions/{s['id']}/fork", json={}, headers=sessions.user.headers)
        assert fork.status_code == 201, fork.text
        r = await sessions.query(fork.json()["id"], "in the fork")
        assert_billed_for_its_usage(r.json(), rate)

    async def test_session_total_is_the_sum_of_its_turns(self, app: object, sessions: SessionsApi) -> None:
        s, _ = await _first_turn(sessions)
        await app_state(app).require_agents().close(uuid.UUID(s["id"]))
        await sessions.query(s["id"], "second")
        snapshots = await sessions.items(s["id"], "metrics/snapshots")
        session = await sessions.get(s["id"])
        assert session["total_cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in snapshots))


async def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


class TestRestartMidTurn:
    def test_kill_9_mid_turn_bills_an_estimate_and_the_next_turn_its_own_usage(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        env = _env(data_dir, AGENT_API_ADMIN_USERNAME="boss", AGENT_API_ADMIN_PASSWORD="boss-password-123")
        port = _free_port()
        server = Server(data_dir, port, tmp_path, env)
        try:
            server.wait_healthy(timeout_s=60)
            http = httpx.Client(base_url=server.base_url, timeout=60)
            token = http.post("/api/v1/auth/login", json={"username": "boss", "password": "boss-password-123"})
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            sid = http.post("/api/v1/sessions", json={"permission_mode": "bypassPermissions"}, headers=headers)
            sid = sid.json()["id"]
            first = http.post(f"/api/v1/sessions/{sid}/query", json={"message": "hello", "wait": True}, headers=headers)
            rate = _rate(first.json())
            r = http.post(f"/api/v1/sessions/{sid}/query", json={"message": "run: sleep 30"}, headers=headers)
            assert r.status_code == 202, r.text
            turn_id = r.json()["turn_id"]

            def usage_recorded() -> bool:
                rows = _rows(data_dir, "SELECT usage FROM turns WHERE id = ?", uuid.UUID(turn_id).hex)
                return bool(rows and rows[0][0])

            _poll(usage_recorded, 30)
            server.proc.kill()  # SIGKILL: no shutdown, no saved totals
            server.proc.wait(timeout=10)
            server = Server(data_dir, port, tmp_path, env)
            server.wait_healthy(timeout_s=60)

            ((status, cost, estimated, usage),) = _rows(
                data_dir,
                "SELECT status, cost_usd, cost_estimated, usage FROM turns WHERE id = ?",
                uuid.UUID(turn_id).hex,
            )
            assert status == "interrupted" and estimated == 1
            partial = json.loads(usage)
            assert costs.weighted_tokens(partial) > 0
            assert cost == pytest.approx(rate * costs.weighted_tokens(partial), rel=1e-3)

            token = http.post("/api/v1/auth/login", json={"username": "boss", "password": "boss-password-123"})
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            after = http.post(
                f"/api/v1/sessions/{sid}/query",
                json={"message": "run: echo after\nrun: echo restart", "wait": True},
                headers=headers,
            )
            assert after.status_code == 200, f"{after.text}\n{server.output()}"
            assert_billed_for_its_usage(after.json(), rate)
            session = http.get(f"/api/v1/sessions/{sid}", headers=headers).json()
            assert session["total_cost_usd"] == pytest.approx(
                first.json()["cost_usd"] + cost + after.json()["cost_usd"], rel=1e-6
            )
        finally:
            server.stop()


def _rows(data_dir: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / DB_FILE) as conn:
        return conn.execute(sql, params).fetchall()


def _poll(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
