"""A real `agent-api serve` on SQLite under many writers at once: no `database is locked`, no 5xx, no lost write;
a fork copying a large working directory does not hold the write lock; concurrent keyed queries make one turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.server import Service, fill_workdir, hex_id, poll

pytestmark = pytest.mark.slow

WRITERS, WRITES = 50, 100


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(
        tmp_path_factory.mktemp("serve"),
        AGENT_API_RATE_LIMIT_QUERY_PER_MINUTE="0",
        AGENT_API_LOGIN_MAX_FAILURES_PER_IP="1000",
    )
    try:
        svc.start()
        yield svc
    finally:
        svc.close()


@pytest.fixture(scope="module")
def users(service: Service) -> list[dict[str, str]]:
    admin = service.login()
    return [service.add_user(admin, f"writer{i}") for i in range(5)]


def _locked(text: str) -> bool:
    return "database is locked" in text.lower()


class TestManyWriters:
    async def test_50_writers_x_100_writes(self, service: Service, users: list[dict[str, str]]) -> None:
        failures: list[str] = []
        created: list[str] = []

        async def writer(http: httpx.AsyncClient, n: int) -> None:
            headers = users[n % len(users)]
            for i in range(WRITES):
                try:
                    r = await http.post(
                        "/api/v1/session-templates", json={"name": f"w{n}-{i}", "tags": [f"w{n}"]}, headers=headers
                    )
                except httpx.TransportError as exc:  # a dropped connection is a failed write too
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 201 or _locked(r.text):
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    created.append(r.json()["id"])

        # A connection per request: a starved client that idles past uvicorn's keep-alive timeout would otherwise
        # race the server's close and count a client artefact as a failed write.
        limits = httpx.Limits(max_connections=WRITERS, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=str(service.http.base_url), timeout=120, limits=limits) as http:
            await asyncio.gather(*(writer(http, n) for n in range(WRITERS)))

        assert failures == [], f"{len(failures)} failed writes, first: {failures[:3]}\n{service.output()[-6000:]}"
        assert len(set(created)) == WRITERS * WRITES
        ((stored,),) = service.rows("SELECT COUNT(*) FROM session_templates WHERE name LIKE 'w%-%'")
        assert stored == WRITERS * WRITES, "lost writes"
        assert not _locked(service.output())


class TestForkDoesNotBlockWriters:
    def test_writes_go_on_while_a_fork_copies(self, service: Service, users: list[dict[str, str]]) -> None:
        owner, other = users[0], users[1]
        r = service.http.post("/api/v1/sessions", json={"permission_mode": "bypassPermissions"}, headers=owner)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        fill_workdir(service.workdir(sid))

        async def run() -> tuple[float, list[float]]:
            async with httpx.AsyncClient(base_url=str(service.http.base_url), timeout=120) as http:
                fork = asyncio.create_task(http.post(f"/api/v1/sessions/{sid}/fork", json={}, headers=owner))
                started = time.monotonic()
                latencies = []
                while not fork.done():
                    t = time.monotonic()
                    w = await http.post("/api/v1/session-templates", json={"name": "meanwhile"}, headers=other)
                    assert w.status_code == 201, w.text
                    latencies.append(time.monotonic() - t)
                done = await fork
                assert done.status_code == 201, done.text
                return time.monotonic() - started, latencies

        copy_s, latencies = asyncio.run(run())
        assert copy_s >= 3, f"the fork took {copy_s:.1f}s: too quick to show anything; enlarge the working directory"
        # Blocked, a write that arrived as the copy began would wait for all of it; half is a generous bound.
        assert max(latencies) < copy_s / 2, (copy_s, sorted(latencies)[-5:])
        assert len(latencies) > 1


class TestIdempotentQuery:
    def test_ten_concurrent_identical_requests_make_one_turn_and_one_charge(
        self, service: Service, users: list[dict[str, str]]
    ) -> None:
        headers = {**users[2], "Idempotency-Key": "ten-at-once"}
        r = service.http.post("/api/v1/sessions", json={"permission_mode": "bypassPermissions"}, headers=users[2])
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        body = {"message": "run: echo once", "wait": True}
        path = f"/api/v1/sessions/{sid}/query"

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=str(service.http.base_url), timeout=120) as http:
                return list(await asyncio.gather(*(http.post(path, json=body, headers=headers) for _ in range(10))))

        answers = asyncio.run(burst())
        assert all(a.status_code in (200, 202, 409) for a in answers), [(a.status_code, a.text) for a in answers]
        assert all(a.json()["error"]["code"] == "idempotency_in_progress" for a in answers if a.status_code == 409)
        turn_ids = {a.json()["turn_id"] for a in answers if a.status_code in (200, 202)}
        assert len(turn_ids) == 1, turn_ids

        final = poll(lambda: (x := service.http.post(path, json=body, headers=headers)).status_code == 200 and x, 60)
        assert final.json()["turn_id"] in turn_ids and final.headers.get("idempotent-replay") == "true"
        turns = service.rows("SELECT id, cost_usd FROM turns WHERE session_id = ?", hex_id(sid))
        assert len(turns) == 1, turns
        messages = service.rows(
            "SELECT COUNT(*) FROM messages WHERE session_id = ? AND text = ?", hex_id(sid), body["message"]
        )
        assert messages == [(1,)]
        ((total,),) = service.rows("SELECT total_cost_usd FROM sessions WHERE id = ?", hex_id(sid))
        assert total == pytest.approx(turns[0][1]) and total > 0

        other = service.http.post(path, json={"message": "something else", "wait": True}, headers=headers)
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused", other.text
        assert len(service.rows("SELECT id FROM turns WHERE session_id = ?", hex_id(sid))) == 1
