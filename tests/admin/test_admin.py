"""Admin routes: the access matrix, stats that equal what was created, lists with a bounded number of queries,
user management with its self-protection, and the audit log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from agent_api.models import Task, TaskExecution
from tests.conftest import UserAccount, Users, app_state, assert_error_shape, wait_until
from tests.monitoring.factories import add_session, add_turn, set_budget

GETS = ["/admin/stats", "/admin/sessions", "/admin/users", "/admin/audit"]
WRITES = [
    ("POST", "/admin/users", {"username": "nobody1", "password": "long-enough-1"}),
    ("PATCH", "/admin/users/{id}", {"monthly_budget_usd": 1}),
    ("POST", "/admin/users/{id}/reset-password", {}),
]


@pytest.fixture
async def admin(users: Users) -> UserAccount:
    return await users.create(admin=True)


@contextmanager
def count_queries(app: object) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = app_state(app).db.engine.sync_engine

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


class TestAccess:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        for path in GETS:
            assert_error_shape(await client.get(f"/api/v1{path}"), 401)

    async def test_users_get_403_on_every_route_and_nothing_changes(
        self, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        for path in GETS:
            assert_error_shape(await client.get(f"/api/v1{path}", headers=owner.headers), 403, "admin_required")
        for method, path, body in WRITES:
            r = await client.request(method, f"/api/v1{path.format(id=owner.id)}", json=body, headers=owner.headers)
            assert_error_shape(r, 403, "admin_required")
        r = await client.get(f"/api/v1/monitoring/costs/budget/{owner.id}", headers=owner.headers)
        assert r.json()["monthly_budget_usd"] is None

    async def test_admins_get_200(self, client: httpx.AsyncClient, admin: UserAccount) -> None:
        for path in GETS:
            r = await client.get(f"/api/v1{path}", headers=admin.headers)
            assert r.status_code == 200, (path, r.text)


class TestStats:
    async def test_numbers_move_by_what_the_test_created(
        self, app: object, client: httpx.AsyncClient, users: Users, admin: UserAccount
    ) -> None:
        before = (await client.get("/api/v1/admin/stats", headers=admin.headers)).json()
        spender = await users.create()
        idle = await users.create()
        r = await client.patch(f"/api/v1/admin/users/{idle.id}", json={"is_active": False}, headers=admin.headers)
        assert r.status_code == 200, r.text
        s1 = await add_session(app, spender.id, status="active")
        await add_session(app, spender.id, status="paused")
        await add_turn(app, s1, spender.id, 500.0, input_tokens=7, output_tokens=3, tools=[("Bash", 5), ("Read", 1)])
        await add_turn(app, s1, spender.id, 250.0, input_tokens=1, output_tokens=1)
        async with app_state(app).db.transaction() as db:
            task = Task(user_id=uuid.UUID(spender.id), name="t", prompt_template="p")
            db.add(task)
            await db.flush()
            for status in ("completed", "completed", "failed"):
                db.add(TaskExecution(task_id=task.id, user_id=task.user_id, status=status, prompt="p"))
        after = (await client.get("/api/v1/admin/stats", headers=admin.headers)).json()

        def delta(*path: str) -> float:
            a, b = after, before
            for key in path:
                a, b = a.get(key, 0), b.get(key, 0)
            return a - b

        assert delta("users", "total") == 2 and delta("users", "disabled") == 1 and delta("users", "enabled") == 1
        assert delta("sessions_total") == 2
        assert delta("sessions_by_status", "active") == 1 and delta("sessions_by_status", "paused") == 1
        for window in ("today", "this_month"):
            assert delta(window, "turns") == 2 and delta(window, "tool_calls") == 2
            assert delta(window, "input_tokens") == 8 and delta(window, "output_tokens") == 4
            assert delta(window, "cost_usd") == pytest.approx(750.0)
        assert delta("users", "active_today") == 1
        assert delta("task_executions_by_status", "completed") == 2
        assert delta("task_executions_by_status", "failed") == 1
        top = after["top_spenders"][0]
        assert (top["user_id"], top["username"], top["turns"]) == (spender.id, spender.username, 2)
        assert top["cost_usd"] == pytest.approx(750.0)
        assert after["live_sdk_clients"] >= 0 and after["period_start"] <= after["generated_at"]


class TestSessions:
    async def test_filters_owner_names_and_keyset_pages(
        self, app: object, client: httpx.AsyncClient, users: Users, admin: UserAccount
    ) -> None:
        a, b = await users.create(), await users.create()
        mine = [await add_session(app, a.id, name=f"a{i}", status="active") for i in range(5)]
        other = await add_session(app, b.id, status="paused")
        await add_turn(app, mine[0], a.id, 3.0)

        async def page(**params: Any) -> dict[str, Any]:
            r = await client.get("/api/v1/admin/sessions", params=params, headers=admin.headers)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        body = await page(user_id=a.id, page_size=100)
        assert body["total"] == 5 and {i["id"] for i in body["items"]} == set(mine)
        assert {i["owner_username"] for i in body["items"]} == {a.username}
        assert [i["id"] for i in body["items"]] == list(reversed(mine))  # newest first
        assert (await page(user_id=b.id, status="paused"))["items"][0]["id"] == other
        assert (await page(user_id=b.id, status="active"))["total"] == 0
        assert [i["id"] for i in (await page(user_id=a.id, cost_above=2.5))["items"]] == [mine[0]]
        created = body["items"][2]["created_at"]
        assert {i["id"] for i in (await page(user_id=a.id, created_after=created))["items"]} == set(mine[2:])
        assert {i["id"] for i in (await page(user_id=a.id, created_before=created))["items"]} == set(mine[:2])

        seen: list[str] = []
        cursor = None
        for _ in range(5):
            params = {"user_id": a.id, "page_size": 2, **({"cursor": cursor} if cursor else {})}
            body = await page(**params)
            assert body["total"] == 5
            seen += [i["id"] for i in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(mine))
        assert (await page(user_id=a.id, page_size=5))["next_cursor"] is None  # a full last page ends the walk
        r = await client.get("/api/v1/admin/sessions", params={"cursor": "not-a-cursor"}, headers=admin.headers)
        assert_error_shape(r, 422, "invalid_cursor")

    @pytest.mark.parametrize("path", ["/api/v1/admin/sessions", "/api/v1/admin/users", "/api/v1/admin/audit"])
    async def test_queries_do_not_grow_with_the_page_size(
        self, app: object, client: httpx.AsyncClient, users: Users, admin: UserAccount, path: str
    ) -> None:
        owners = [await users.create() for _ in range(3)]
        for user in owners:
            for _ in range(4):
                await add_session(app, user.id)
        counts = {}
        for size in (2, 50):
            with count_queries(app) as statements:
                r = await client.get(path, params={"page_size": size}, headers=admin.headers)
            assert r.status_code == 200 and len(r.json()["items"]) == min(size, r.json()["total"])
            counts[size] = len(statements)
        assert counts[2] == counts[50] and counts[50] <= 6, counts


class TestUserManagement:
    async def test_create_list_and_log_in(self, client: httpx.AsyncClient, admin: UserAccount, users: Users) -> None:
        name = f"n{uuid.uuid4().hex[:10]}"
        body = {
            "username": name,
            "password": "correct horse",
            "is_admin": False,
            "monthly_budget_usd": 12.5,
            "role": "admin",
            "total_cost_usd": 99,
        }  # fields outside the schema are ignored
        r = await client.post("/api/v1/admin/users", json=body, headers=admin.headers)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["role"] == "user" and created["monthly_budget_usd"] == 12.5 and created["total_cost_usd"] == 0
        assert created["session_count"] == 0 and created["last_login_at"] is None
        r = await client.post("/api/v1/auth/login", json={"username": name, "password": "correct horse"})
        assert r.status_code == 200
        listed = (await client.get("/api/v1/admin/users", params={"search": name}, headers=admin.headers)).json()
        assert listed["total"] == 1 and listed["items"][0]["last_login_at"] is not None
        r = await client.post("/api/v1/admin/users", json=body, headers=admin.headers)
        assert_error_shape(r, 409, "username_taken")
        r = await client.post("/api/v1/admin/users", json={"username": "x", "password": "short"}, headers=admin.headers)
        assert_error_shape(r, 422)

    async def test_users_list_shows_sessions_spend_and_budget(
        self, app: object, client: httpx.AsyncClient, admin: UserAccount, users: Users
    ) -> None:
        user = await users.create()
        s = await add_session(app, user.id)
        await add_session(app, user.id)
        await add_turn(app, s, user.id, 1.25)
        await set_budget(app, user.id, 10.0)
        r = await client.get("/api/v1/admin/users", params={"search": user.username}, headers=admin.headers)
        item = r.json()["items"][0]
        assert item["session_count"] == 2 and item["current_month_cost_usd"] == pytest.approx(1.25)
        assert item["monthly_budget_usd"] == 10.0 and item["effective_budget_usd"] == 10.0

    async def test_search_treats_like_wildcards_as_text(self, client: httpx.AsyncClient, admin: UserAccount) -> None:
        for term in ("_", "%"):
            r = await client.get(
                "/api/v1/admin/users", params={"search": term, "page_size": 100}, headers=admin.headers
            )
            assert r.status_code == 200
            assert all(term in (i["username"] + (i["email"] or "")) for i in r.json()["items"])

    async def test_reset_password_without_a_body_generates_one(
        self, client: httpx.AsyncClient, admin: UserAccount, users: Users
    ) -> None:
        user = await users.create()
        r = await client.post(f"/api/v1/admin/users/{user.id}/reset-password", headers=admin.headers)
        assert r.status_code == 200, r.text

    async def test_patch_admin_flag_disabled_and_budget(
        self, client: httpx.AsyncClient, admin: UserAccount, users: Users
    ) -> None:
        user = await users.create()
        path = f"/api/v1/admin/users/{user.id}"
        r = await client.patch(path, json={"is_admin": True, "monthly_budget_usd": 3}, headers=admin.headers)
        assert r.status_code == 200 and r.json()["role"] == "admin" and r.json()["monthly_budget_usd"] == 3
        assert (await client.get("/api/v1/admin/stats", headers=user.headers)).status_code == 200
        r = await client.patch(path, json={"is_admin": False, "monthly_budget_usd": None}, headers=admin.headers)
        assert r.json()["role"] == "user" and r.json()["monthly_budget_usd"] is None
        r = await client.patch(path, json={"is_active": False}, headers=admin.headers)
        assert r.json()["is_active"] is False
        assert_error_shape(await client.get("/api/v1/auth/me", headers=user.headers), 401)
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert_error_shape(r, 401)
        r = await client.post("/api/v1/auth/login", json={"username": user.username, "password": user.password})
        assert_error_shape(r, 401)
        r = await client.patch(path, json={"monthly_budget_usd": -1}, headers=admin.headers)
        assert_error_shape(r, 422)
        missing = f"/api/v1/admin/users/{uuid.uuid4()}"
        assert_error_shape(await client.patch(missing, json={}, headers=admin.headers), 404, "user_not_found")

    async def test_an_admin_cannot_demote_or_disable_themself(
        self, client: httpx.AsyncClient, admin: UserAccount
    ) -> None:
        path = f"/api/v1/admin/users/{admin.id}"
        r = await client.patch(path, json={"is_admin": False}, headers=admin.headers)
        assert_error_shape(r, 409, "cannot_demote_self")
        r = await client.patch(path, json={"is_active": False, "monthly_budget_usd": 1}, headers=admin.headers)
        assert_error_shape(r, 409, "cannot_disable_self")
        me = (await client.get(path, headers=admin.headers)).json()
        assert me["is_admin"] is True and me["is_active"] is True and me["monthly_budget_usd"] is None

    async def test_reset_password_signs_the_user_out(
        self, client: httpx.AsyncClient, admin: UserAccount, users: Users
    ) -> None:
        user = await users.create()
        path = f"/api/v1/admin/users/{user.id}/reset-password"
        r = await client.post(path, json={}, headers=admin.headers)
        assert r.status_code == 200, r.text
        temporary = r.json()["temporary_password"]
        assert temporary and r.json()["revoked_logins"] == 1
        assert_error_shape(await client.get("/api/v1/auth/me", headers=user.headers), 401)
        old = await client.post("/api/v1/auth/login", json={"username": user.username, "password": user.password})
        assert_error_shape(old, 401)
        new = await client.post("/api/v1/auth/login", json={"username": user.username, "password": temporary})
        assert new.status_code == 200
        r = await client.post(path, json={"new_password": "chosen-password"}, headers=admin.headers)
        assert r.json()["temporary_password"] is None
        new = await client.post("/api/v1/auth/login", json={"username": user.username, "password": "chosen-password"})
        assert new.status_code == 200


class TestAudit:
    async def _actions(self, client: httpx.AsyncClient, admin: UserAccount, **params: Any) -> list[dict[str, Any]]:
        r = await client.get("/api/v1/admin/audit", params={"page_size": 100, **params}, headers=admin.headers)
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]

    async def test_admin_actions_are_recorded(
        self, client: httpx.AsyncClient, admin: UserAccount, users: Users
    ) -> None:
        user = await users.create()
        await client.patch(f"/api/v1/admin/users/{user.id}", json={"monthly_budget_usd": 2}, headers=admin.headers)
        await client.post(f"/api/v1/admin/users/{user.id}/reset-password", json={}, headers=admin.headers)
        events = await self._actions(client, admin, target_user_id=user.id, action="admin.*")
        assert [e["action"] for e in events] == ["admin.password_reset", "admin.user_updated"]  # newest first
        assert events[1]["details"] == {"monthly_budget_usd": [None, 2.0]}
        assert all(e["actor_id"] == admin.id for e in events)
        assert "temporary_password" not in str(events[0]["details"])

    async def test_login_failures_and_refresh_reuse_are_recorded(
        self, client: httpx.AsyncClient, admin: UserAccount, users: Users
    ) -> None:
        user = await users.create()
        await client.post("/api/v1/auth/login", json={"username": user.username, "password": "wrong-password"})
        refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert refreshed.status_code == 200
        reused = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert_error_shape(reused, 401, "token_reused")

        async def recorded() -> set[str] | None:
            actions = {e["action"] for e in await self._actions(client, admin, target_user_id=user.id)}
            return actions if {"auth.login_failed", "auth.refresh_reused"} <= actions else None

        await wait_until(recorded)
