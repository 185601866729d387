"""`permission_timeout_s` and `on_permission_timeout` on sessions, templates and tasks: accepted, bounded, reported,
and passed on to the sessions they create."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from agent_api.models import Task, TaskExecution
from agent_api.tasks.service import session_body
from tests.conftest import SessionsApi, app_state, assert_error_shape
from tests.tasks.conftest import TASKS, TasksApi

SESSIONS = "/api/v1/sessions"
TEMPLATES = "/api/v1/session-templates"
BAD_VALUES: list[dict[str, Any]] = [
    {"permission_timeout_s": 0},
    {"permission_timeout_s": 0.5},
    {"permission_timeout_s": -5},
    {"permission_timeout_s": 86_401},
    {"permission_timeout_s": "soon"},
    {"on_permission_timeout": "ask"},
    {"on_permission_timeout": "ALLOW"},
    {"on_permission_timeout": True},
]


def options(body: dict[str, Any]) -> tuple[Any, Any]:
    return body["permission_timeout_s"], body["on_permission_timeout"]


async def total(client: httpx.AsyncClient, path: str, sessions: SessionsApi) -> int:
    r = await client.get(path, headers=sessions.user.headers)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


class TestSessions:
    async def test_set_and_reported(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_timeout_s=30, on_permission_timeout="allow")
        assert options(s) == (30, "allow")
        assert options(await sessions.get(s["id"])) == (30, "allow")

    async def test_left_out_is_the_servers_default(self, sessions: SessionsApi) -> None:
        s = await sessions.create()
        assert options(await sessions.get(s["id"])) == (None, None)

    async def test_a_fork_keeps_them(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_timeout_s=86_400, on_permission_timeout="deny")
        r = await client.post(f"{SESSIONS}/{s['id']}/fork", json={}, headers=sessions.user.headers)
        assert r.status_code == 201, r.text
        assert options(r.json()) == (86_400, "deny")

    @pytest.mark.parametrize("bad", BAD_VALUES)
    async def test_bad_values_are_422_and_create_nothing(
        self, client: httpx.AsyncClient, sessions: SessionsApi, bad: dict[str, Any]
    ) -> None:
        before = await total(client, SESSIONS, sessions)
        r = await client.post(SESSIONS, json=bad, headers=sessions.user.headers)
        assert_error_shape(r, 422)
        assert await total(client, SESSIONS, sessions) == before


class TestTemplates:
    async def test_a_template_passes_them_to_its_sessions_unless_the_session_sets_its_own(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        body = {"name": f"t-{uuid.uuid4().hex[:8]}", "permission_timeout_s": 45, "on_permission_timeout": "allow"}
        r = await client.post(TEMPLATES, json=body, headers=sessions.user.headers)
        assert r.status_code == 201, r.text
        template = r.json()
        assert options(template) == (45, "allow")
        got = await client.get(f"{TEMPLATES}/{template['id']}", headers=sessions.user.headers)
        assert options(got.json()) == (45, "allow")

        inherited = await sessions.create(template_id=template["id"])
        assert options(inherited) == (45, "allow")
        own = await sessions.create(template_id=template["id"], on_permission_timeout="deny")
        assert options(own) == (45, "deny")

    @pytest.mark.parametrize("bad", BAD_VALUES[:2] + BAD_VALUES[-2:])
    async def test_bad_values_are_422_and_change_nothing(
        self, client: httpx.AsyncClient, sessions: SessionsApi, bad: dict[str, Any]
    ) -> None:
        before = await total(client, TEMPLATES, sessions)
        r = await client.post(TEMPLATES, json={"name": "bad", **bad}, headers=sessions.user.headers)
        assert_error_shape(r, 422)
        assert await total(client, TEMPLATES, sessions) == before
        r = await client.post(
            TEMPLATES, json={"name": "good", "permission_timeout_s": 10}, headers=sessions.user.headers
        )
        template = r.json()
        replaced = await client.put(
            f"{TEMPLATES}/{template['id']}", json={"name": "good", **bad}, headers=sessions.user.headers
        )
        assert_error_shape(replaced, 422)
        got = await client.get(f"{TEMPLATES}/{template['id']}", headers=sessions.user.headers)
        assert options(got.json()) == (10, None)


class TestTasks:
    @pytest.fixture
    def tasks(self, client: httpx.AsyncClient, sessions: SessionsApi) -> TasksApi:
        return TasksApi(client, sessions.user)

    async def test_set_changed_and_reported(self, tasks: TasksApi) -> None:
        t = await tasks.create(permission_timeout_s=60, on_permission_timeout="allow")
        assert options(t) == (60, "allow")
        r = await tasks.client.patch(
            f"{TASKS}/{t['id']}", json={"on_permission_timeout": "deny"}, headers=tasks.user.headers
        )
        assert r.status_code == 200 and options(r.json()) == (60, "deny"), r.text
        r = await tasks.client.patch(
            f"{TASKS}/{t['id']}", json={"permission_timeout_s": None}, headers=tasks.user.headers
        )
        assert r.status_code == 200 and options(r.json()) == (None, "deny"), r.text

    @pytest.mark.parametrize("bad", BAD_VALUES[:2] + BAD_VALUES[-2:])
    async def test_bad_values_are_422_and_change_nothing(self, tasks: TasksApi, bad: dict[str, Any]) -> None:
        r = await tasks.client.post(
            TASKS, json={"name": "x", "prompt_template": "y", **bad}, headers=tasks.user.headers
        )
        assert_error_shape(r, 422)
        t = await tasks.create(permission_timeout_s=20)
        patched = await tasks.client.patch(f"{TASKS}/{t['id']}", json=bad, headers=tasks.user.headers)
        assert_error_shape(patched, 422)
        got = await tasks.client.get(f"{TASKS}/{t['id']}", headers=tasks.user.headers)
        assert options(got.json()) == (20, None)

    async def test_an_executions_session_gets_the_tasks_or_else_its_templates(
        self, app: object, tasks: TasksApi
    ) -> None:
        r = await tasks.client.post(
            TEMPLATES,
            json={"name": "T", "permission_timeout_s": 45, "on_permission_timeout": "allow"},
            headers=tasks.user.headers,
        )
        template = r.json()
        plain = await tasks.create(permission_timeout_s=5, on_permission_timeout="allow")
        from_template = await tasks.create(template_id=template["id"])
        overriding = await tasks.create(template_id=template["id"], on_permission_timeout="deny")
        bodies = {}
        async with app_state(app).db.transaction(readonly=True) as db:
            for t in (plain, from_template, overriding):
                task = await db.get(Task, uuid.UUID(t["id"]))
                assert task is not None
                execution = TaskExecution(id=uuid.uuid4(), task_id=task.id, user_id=task.user_id)
                bodies[t["id"]] = session_body(task, execution)
        assert (bodies[plain["id"]].permission_timeout_s, bodies[plain["id"]].on_permission_timeout) == (5, "allow")
        # From a template: the session takes the template's values unless the task set its own.
        inherited = bodies[from_template["id"]]
        assert "permission_timeout_s" not in inherited.model_fields_set
        assert "on_permission_timeout" not in inherited.model_fields_set
        assert bodies[overriding["id"]].on_permission_timeout == "deny"
        assert "permission_timeout_s" not in bodies[overriding["id"]].model_fields_set
