"""Who may touch a session (401 without credentials, 404 for anyone else), what a request may say, lists, concurrency."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from agent_api.sessions import service
from tests.conftest import SessionsApi, UserAccount, Users, app_state, assert_error_shape, wait_until

SESSIONS = "/api/v1/sessions"

# (method, path under /sessions/{id}, JSON body): every route that names one session.
SESSION_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "", None),
    ("DELETE", "", None),
    ("POST", "/query", {"message": "hello", "wait": False}),
    ("POST", "/resume", None),
    ("POST", "/pause", None),
    ("POST", "/interrupt", None),
    ("POST", "/fork", {}),
    ("POST", "/archive", None),
    ("GET", "/archive", None),
    ("GET", "/messages", None),
    ("GET", "/tool-calls", None),
    ("GET", "/hooks", None),
    ("GET", "/permissions", None),
    ("POST", "/permissions/{request_id}", {"decision": "allow"}),
    ("GET", "/metrics/snapshots", None),
    ("GET", "/metrics/current", None),
    ("GET", "/workdir/download", None),
    ("GET", "/files", None),
    ("GET", "/files/content?path=a.txt", None),
]
ROUTE_IDS = [f"{m} {p or '/'}" for m, p, _ in SESSION_ROUTES]


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    session_id: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    url = f"{SESSIONS}/{session_id}{path.format(request_id=uuid.uuid4())}"
    return await client.request(method, url, json=body, headers=headers or {})


async def listing(client: httpx.AsyncClient, user: UserAccount, **params: Any) -> dict[str, Any]:
    r = await client.get(SESSIONS, params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def workdir_count(app: object) -> int:
    root = app_state(app).settings.data_dir / "workdirs"
    return len(list(root.iterdir())) if root.is_dir() else 0


class TestUnauthenticated:
    @pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}], ids=["none", "garbage"])
    @pytest.mark.parametrize(("method", "path", "body"), SESSION_ROUTES, ids=ROUTE_IDS)
    async def test_every_session_route_is_401(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
    ) -> None:
        r = await call(client, method, path, body, str(uuid.uuid4()), headers)
        assert_error_shape(r, 401, "unauthorized" if not headers else None)
        assert r.headers["www-authenticate"].lower().startswith("bearer")

    @pytest.mark.parametrize(("method", "body"), [("GET", None), ("POST", {"name": "x"})])
    async def test_collection_is_401(self, client: httpx.AsyncClient, method: str, body: dict[str, Any] | None) -> None:
        assert_error_shape(await client.request(method, SESSIONS, json=body), 401, "unauthorized")


class TestOtherUsersSession:
    async def test_every_route_is_404_and_changes_nothing(
        self, app: object, client: httpx.AsyncClient, users: Users, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(name="private", permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        intruder = await users.create()
        unknown = await call(client, "GET", "", None, str(uuid.uuid4()), intruder.headers)
        unknown_body = assert_error_shape(unknown, 404, "session_not_found")

        for method, path, body in SESSION_ROUTES:
            r = await call(client, method, path, body, s["id"], intruder.headers)
            got = assert_error_shape(r, 404, "session_not_found")
            # Indistinguishable from a session that does not exist.
            assert got["error"]["message"] == unknown_body["error"]["message"], (method, path)  # type: ignore[index]

        after = await sessions.get(s["id"])
        assert after["status"] == "active"
        assert after["message_count"] == 0 and after["turn_count"] == 0 and after["name"] == "private"
        assert (await listing(client, sessions.user))["total"] == 1, "no fork may have been made"
        assert (await listing(client, intruder))["total"] == 0
        no_archive = await client.get(f"{SESSIONS}/{s['id']}/archive", headers=sessions.user.headers)
        assert_error_shape(no_archive, 404)
        assert service.workdir_of(app_state(app), uuid.UUID(s["id"])).is_dir()
        assert app_state(app).require_agents().is_live(uuid.UUID(s["id"])), "the intruder closed the live client"


class TestValidation:
    async def test_client_working_directory_is_refused_and_nothing_created(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        before, dirs = (await listing(client, owner))["total"], workdir_count(app)
        r = await client.post(SESSIONS, json={"name": "x", "working_directory": "/etc"}, headers=owner.headers)
        body = assert_error_shape(r, 422, "validation_error")
        assert "working_directory" in str(body["error"])  # type: ignore[index]
        assert (await listing(client, owner))["total"] == before
        assert workdir_count(app) == dirs

    async def test_message_over_the_cap_is_422_and_records_nothing(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create()
        r = await sessions.query(s["id"], "x" * 50_001, wait=False)
        assert_error_shape(r, 422, "validation_error")
        assert_error_shape(await sessions.query(s["id"], "", wait=False), 422, "validation_error")
        after = await sessions.get(s["id"])
        assert after["message_count"] == 0 and after["turn_count"] == 0
        assert after["status"] in ("created", "connecting", "active")
        assert await sessions.items(s["id"], "messages") == []

    @pytest.mark.parametrize(
        "body",
        [
            {"permission_mode": "yolo"},
            {"sdk_options": {"max_turns": 0}},
            {"allowed_tools": [""]},
            {"name": "n" * 201},
            {"metadata": {"blob": "x" * 20_000}},
        ],
        ids=["permission_mode", "max_turns", "empty_tool_rule", "long_name", "big_metadata"],
    )
    async def test_bad_settings_are_422(
        self, client: httpx.AsyncClient, owner: UserAccount, body: dict[str, Any]
    ) -> None:
        before = (await listing(client, owner))["total"]
        assert_error_shape(await client.post(SESSIONS, json=body, headers=owner.headers), 422, "validation_error")
        assert (await listing(client, owner))["total"] == before

    async def test_invalid_blocked_command_pattern_is_named(
        self, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        pattern = "([unclosed"
        r = await client.post(SESSIONS, json={"blocked_commands": ["ok", pattern]}, headers=owner.headers)
        body = assert_error_shape(r, 422, "validation_error")
        assert pattern in str(body["error"]), body  # type: ignore[index]
        assert (await listing(client, owner))["total"] == 0

    @pytest.mark.parametrize("params", [{"page_size": 101}, {"page_size": 0}, {"page": 0}])
    async def test_page_bounds(self, client: httpx.AsyncClient, sessions: SessionsApi, params: dict[str, int]) -> None:
        s = await sessions.create()
        for url in (SESSIONS, f"{SESSIONS}/{s['id']}/messages", f"{SESSIONS}/{s['id']}/permissions"):
            r = await client.get(url, params=params, headers=sessions.user.headers)
            assert_error_shape(r, 422, "validation_error")
        ok = await client.get(SESSIONS, params={"page_size": 100}, headers=sessions.user.headers)
        assert ok.status_code == 200 and ok.json()["page_size"] == 100

    @pytest.mark.parametrize("bad", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
    async def test_malformed_session_id_is_422(self, client: httpx.AsyncClient, owner: UserAccount, bad: str) -> None:
        for method, path, body in (
            ("GET", "", None),
            ("POST", "/query", {"message": "hi"}),
            ("GET", "/workdir/download", None),
        ):
            r = await client.request(method, f"{SESSIONS}/{bad}{path}", json=body, headers=owner.headers)
            assert_error_shape(r, 422, "validation_error")

    async def test_malformed_permission_request_id_is_422(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create()
        r = await client.post(
            f"{SESSIONS}/{s['id']}/permissions/nope", json={"decision": "allow"}, headers=sessions.user.headers
        )
        assert_error_shape(r, 422, "validation_error")
        r = await client.post(
            f"{SESSIONS}/{s['id']}/permissions/{uuid.uuid4()}",
            json={"decision": "maybe"},
            headers=sessions.user.headers,
        )
        assert_error_shape(r, 422, "validation_error")

    async def test_unknown_fields_are_ignored(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        r = await client.post(SESSIONS, json={"name": "x", "foo": 1}, headers=sessions.user.headers)
        assert r.status_code == 201, r.text
        assert "foo" not in r.json() and r.json()["name"] == "x"
        again = await sessions.get(r.json()["id"])
        assert "foo" not in again and "foo" not in again["metadata"]


class TestMassAssignment:
    async def test_owner_cost_and_status_fields_are_ignored(
        self, client: httpx.AsyncClient, users: Users, sessions: SessionsApi
    ) -> None:
        victim = await users.create()
        chosen_id = str(uuid.uuid4())
        s = await sessions.create(
            id=chosen_id,
            user_id=victim.id,
            total_cost_usd=99.5,
            total_input_tokens=10**6,
            status="archived",
            message_count=50,
            tool_call_count=7,
            is_fork=True,
            parent_session_id=str(uuid.uuid4()),
            sdk_session_id="stolen",
        )
        assert s["id"] != chosen_id
        assert s["user_id"] == sessions.user.id
        assert s["total_cost_usd"] == 0 and s["total_input_tokens"] == 0
        assert s["status"] in ("created", "connecting", "active")
        assert s["message_count"] == 0 and s["tool_call_count"] == 0
        assert s["is_fork"] is False and s["parent_session_id"] is None
        assert (await listing(client, victim))["total"] == 0
        stored = await sessions.get(s["id"])
        assert stored["user_id"] == sessions.user.id and stored["total_cost_usd"] == 0


class TestListing:
    async def test_own_sessions_paged_filtered_and_without_deleted(
        self, client: httpx.AsyncClient, users: Users, sessions: SessionsApi
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        other = SessionsApi(client, await users.create())
        await other.create(name=f"alpha-{tag}-other")
        created = [await sessions.create(name=f"{n}-{tag}") for n in ("alpha", "alphabet", "beta")]
        ids = {s["id"] for s in created}

        first = await listing(client, sessions.user, page_size=2)
        second = await listing(client, sessions.user, page_size=2, page=2)
        assert (first["total"], first["total_pages"], first["page"], first["page_size"]) == (3, 2, 1, 2)
        assert (second["total"], second["total_pages"], second["page"]) == (3, 2, 2)
        assert len(first["items"]) == 2 and len(second["items"]) == 1
        assert {s["id"] for s in first["items"] + second["items"]} == ids
        assert all(s["user_id"] == sessions.user.id for s in first["items"] + second["items"])
        beyond = await listing(client, sessions.user, page_size=2, page=3)
        assert beyond["items"] == [] and beyond["total"] == 3

        found = await listing(client, sessions.user, search="ALPHA")
        assert {s["name"] for s in found["items"]} == {f"alpha-{tag}", f"alphabet-{tag}"} and found["total"] == 2
        assert (await listing(client, sessions.user, search="%"))["total"] == 0, "% is a literal, not a wildcard"
        assert (await listing(client, sessions.user, search="_"))["total"] == 0

        paused = await client.post(f"{SESSIONS}/{created[2]['id']}/pause", headers=sessions.user.headers)
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        by_status = await listing(client, sessions.user, status="paused")
        assert [s["id"] for s in by_status["items"]] == [created[2]["id"]] and by_status["total"] == 1
        assert_error_shape(await client.get(SESSIONS, params={"status": "nope"}, headers=sessions.user.headers), 422)

        gone = await client.delete(f"{SESSIONS}/{created[0]['id']}", headers=sessions.user.headers)
        assert gone.status_code == 204
        remaining = await listing(client, sessions.user)
        assert remaining["total"] == 2 and created[0]["id"] not in {s["id"] for s in remaining["items"]}
        terminated = await listing(client, sessions.user, status="terminated")
        assert [s["id"] for s in terminated["items"]] == [created[0]["id"]]


class TestConcurrencyAndIdempotency:
    @pytest.mark.slow
    async def test_two_concurrent_queries_one_wins(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        prompt = f"sleep: 3\n{uuid.uuid4().hex}"
        responses = await asyncio.gather(
            sessions.query(s["id"], prompt, wait=False), sessions.query(s["id"], prompt, wait=False)
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [202, 409], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 409)
        assert_error_shape(loser, 409, "session_busy")
        winner = next(r for r in responses if r.status_code == 202).json()
        assert winner["status"] == "processing" and winner["id"] == s["id"]

        await sessions.wait_status(s["id"], "active", timeout=60)
        user_messages = [m for m in await sessions.items(s["id"], "messages") if m["text"] == prompt]
        assert len(user_messages) == 1 and user_messages[0]["turn_id"] == winner["turn_id"]
        assert (await sessions.get(s["id"]))["turn_count"] == 1

    @pytest.mark.slow
    async def test_same_idempotency_key_replays_and_runs_once(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        url = f"{SESSIONS}/{s['id']}/query"
        key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}", **sessions.user.headers}
        prompt = f"sleep: 2\n{uuid.uuid4().hex}"
        first = await client.post(url, json={"message": prompt}, headers=key)
        assert first.status_code == 202, first.text
        assert "idempotent-replay" not in first.headers
        # Replayed while the first turn still runs: the replay comes before the busy check.
        second = await client.post(url, json={"message": prompt}, headers=key)
        assert second.status_code == 202, second.text
        assert second.json() == first.json()
        assert second.headers["idempotent-replay"] == "true"

        async def turn_done() -> bool:
            snaps = await sessions.items(s["id"], "metrics/snapshots")
            return any(x["turn_id"] == first.json()["turn_id"] for x in snaps)

        await wait_until(turn_done, timeout=60)
        await sessions.wait_status(s["id"], "active")
        # Once the turn has finished, a retry gets its outcome (a 202 is not a final answer), still no second turn.
        third = await client.post(url, json={"message": prompt}, headers=key)
        assert third.status_code == 200 and third.headers["idempotent-replay"] == "true", third.text
        assert third.json()["turn_id"] == first.json()["turn_id"] and third.json()["turn_status"] == "completed"
        user_messages = [m for m in await sessions.items(s["id"], "messages") if m["text"] == prompt]
        assert len(user_messages) == 1
        assert (await sessions.get(s["id"]))["turn_count"] == 1

        fresh = await client.post(
            url,
            json={"message": "another"},
            headers={"Idempotency-Key": f"k-{uuid.uuid4().hex}", **sessions.user.headers},
        )
        assert fresh.status_code == 202 and fresh.json()["turn_id"] != first.json()["turn_id"]
        await sessions.wait_status(s["id"], "active", timeout=60)

    async def test_idempotent_fork_makes_one_child(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s = await sessions.create(name="forked-once")
        headers = {"Idempotency-Key": f"f-{uuid.uuid4().hex}", **sessions.user.headers}
        first = await client.post(f"{SESSIONS}/{s['id']}/fork", json={}, headers=headers)
        second = await client.post(f"{SESSIONS}/{s['id']}/fork", json={}, headers=headers)
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        assert second.json() == first.json() and second.headers["idempotent-replay"] == "true"
        assert (await listing(client, sessions.user, is_fork=True))["total"] == 1

    async def test_a_key_is_scoped_to_its_user(self, client: httpx.AsyncClient, users: Users) -> None:
        key = f"shared-{uuid.uuid4().hex}"
        a, b = SessionsApi(client, await users.create()), SessionsApi(client, await users.create())
        sa, sb = await a.create(), await b.create()
        fa = await client.post(
            f"{SESSIONS}/{sa['id']}/fork", json={}, headers={"Idempotency-Key": key, **a.user.headers}
        )
        fb = await client.post(
            f"{SESSIONS}/{sb['id']}/fork", json={}, headers={"Idempotency-Key": key, **b.user.headers}
        )
        assert fa.status_code == fb.status_code == 201
        assert "idempotent-replay" not in fb.headers
        assert fb.json()["user_id"] == b.user.id and fb.json()["parent_session_id"] == sb["id"]
