"""Task definitions: CRUD, validation (cron, time zone, variables), schedules shown, isolation, soft delete."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from agent_api.models import Task, TaskExecution
from agent_api.tasks import runner
from tests.conftest import UserAccount, Users, app_state, assert_error_shape
from tests.tasks.conftest import TASKS, TasksApi


class TestCrud:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        assert_error_shape(await client.get(TASKS), 401)
        assert_error_shape(await client.post(TASKS, json={"name": "x", "prompt_template": "y"}), 401)

    async def test_create_read_patch_list(self, client: httpx.AsyncClient, tasks: TasksApi) -> None:
        t = await tasks.create(
            name="Nightly",
            prompt_template="Summarise {{topic}} for {{team}}",
            variables={"team": "ops"},
            schedule_cron="0 3 * * *",
            schedule_timezone="Europe/Paris",
            tags=["nightly"],
            metadata={"k": "v"},
            execution_count=99,  # not settable: ignored
        )
        assert t["is_scheduled"] is True and t["schedule_enabled"] is True and t["execution_count"] == 0
        next_run = datetime.fromisoformat(t["next_run_at"])
        assert next_run > datetime.now(UTC) and next_run - datetime.now(UTC) <= timedelta(days=1, hours=1)
        assert next_run.astimezone(ZoneInfo("Europe/Paris")).hour == 3
        assert t["generate_report"] is True and t["report_format"] == "html" and t["timeout_seconds"] == 600
        r = await client.patch(
            f"{TASKS}/{t['id']}", json={"schedule_enabled": False, "description": "d"}, headers=tasks.user.headers
        )
        assert r.status_code == 200, r.text
        patched = r.json()
        assert patched["is_scheduled"] is False and patched["next_run_at"] is None
        assert patched["description"] == "d" and patched["prompt_template"] == t["prompt_template"]
        r = await client.patch(f"{TASKS}/{t['id']}", json={"is_scheduled": True}, headers=tasks.user.headers)
        assert r.json()["is_scheduled"] is True and r.json()["next_run_at"] is not None
        listed = (await client.get(TASKS, params={"is_scheduled": True}, headers=tasks.user.headers)).json()
        assert t["id"] in {i["id"] for i in listed["items"]}
        listed = (await client.get(TASKS, params={"is_scheduled": False}, headers=tasks.user.headers)).json()
        assert t["id"] not in {i["id"] for i in listed["items"]}
        listed = (await client.get(TASKS, params={"tag": "nightly"}, headers=tasks.user.headers)).json()
        assert [i["id"] for i in listed["items"]] == [t["id"]]

    @pytest.mark.parametrize(
        ("body", "needle"),
        [
            ({"schedule_cron": "every minute"}, "invalid cron expression"),
            ({"schedule_cron": "61 * * * *"}, "invalid cron expression"),
            ({"schedule_cron": "* * * * * *"}, "expected 5 fields"),
            ({"schedule_timezone": "Mars/Olympus"}, "unknown time zone"),
            ({"schedule_timezone": "America"}, "unknown time zone"),
            ({"schedule_cron": "0 0 31 2 *"}, "never fires"),
            ({"prompt_template": ""}, ""),
            ({"timeout_seconds": 0}, ""),
            ({"report_format": "docx"}, ""),
            ({"template_id": str(uuid.uuid4())}, "Unknown template"),
            ({"variables": {"bad name": "x"}}, ""),
        ],
    )
    async def test_bad_input_is_422_with_the_reason(
        self, client: httpx.AsyncClient, tasks: TasksApi, body: dict[str, Any], needle: str
    ) -> None:
        before = (await client.get(TASKS, headers=tasks.user.headers)).json()["total"]
        r = await client.post(TASKS, json={"name": "x", "prompt_template": "y", **body}, headers=tasks.user.headers)
        assert_error_shape(r, 422)
        assert needle in r.text
        assert (await client.get(TASKS, headers=tasks.user.headers)).json()["total"] == before

    async def test_patch_validates_too(self, client: httpx.AsyncClient, tasks: TasksApi) -> None:
        t = await tasks.create()
        for body in ({"schedule_cron": "nope"}, {"name": None}, {"prompt_template": None}):
            assert_error_shape(await client.patch(f"{TASKS}/{t['id']}", json=body, headers=tasks.user.headers), 422)
        assert (await client.get(f"{TASKS}/{t['id']}", headers=tasks.user.headers)).json()["name"] == t["name"]

    async def test_missing_variable_is_422_naming_it(self, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="Deploy {{service}} to {{ env }}", variables={"env": "staging"})
        r = await tasks.execute(t["id"])
        body = assert_error_shape(r, 422, "missing_variables")
        assert body["error"]["details"] == {"missing": ["service"]}  # type: ignore[index]
        assert (await tasks.executions(t["id"]))["total"] == 0


class TestIsolation:
    async def test_another_users_task_and_executions_are_404(
        self, app: object, client: httpx.AsyncClient, tasks: TasksApi, users: Users
    ) -> None:
        t = await tasks.create()
        execution_id = await _finished_execution(app, t, tasks.user)
        stranger: UserAccount = await users.create()
        h = stranger.headers
        for method, path, body in [
            ("GET", f"{TASKS}/{t['id']}", None),
            ("PATCH", f"{TASKS}/{t['id']}", {"name": "x"}),
            ("DELETE", f"{TASKS}/{t['id']}", None),
            ("POST", f"{TASKS}/{t['id']}/execute", {"variables": {}}),
            ("GET", f"{TASKS}/{t['id']}/executions", None),
            ("GET", f"{TASKS}/executions/{execution_id}", None),
            ("POST", f"{TASKS}/executions/{execution_id}/cancel", None),
        ]:
            assert_error_shape(await client.request(method, path, json=body, headers=h), 404)
        assert (await client.get(TASKS, headers=h)).json()["total"] == 0

    async def test_deleted_task_keeps_its_executions_readable(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create(schedule_cron="* * * * *")
        execution_id = await _finished_execution(app, t, tasks.user)
        r = await tasks.client.delete(f"{TASKS}/{t['id']}", headers=tasks.user.headers)
        assert r.status_code == 204
        assert_error_shape(await tasks.client.get(f"{TASKS}/{t['id']}", headers=tasks.user.headers), 404)
        assert (await tasks.execution(execution_id))["status"] == "completed"

    async def test_cancelling_a_finished_execution_is_409(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create()
        execution_id = await _finished_execution(app, t, tasks.user)
        r = await tasks.client.post(f"{TASKS}/executions/{execution_id}/cancel", headers=tasks.user.headers)
        assert_error_shape(r, 409, "execution_finished")


async def _finished_execution(app: object, task: dict[str, Any], user: UserAccount) -> str:
    """An execution row in its final state, written directly (these tests are about access, not running)."""
    execution = TaskExecution(task_id=uuid.UUID(task["id"]), user_id=uuid.UUID(user.id), status="completed", prompt="p")
    async with app_state(app).db.transaction() as db:
        db.add(execution)
        await db.flush()
    return str(execution.id)


class TestCancelBeforeStart:
    async def test_a_cancelled_queued_execution_never_starts(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="hello")
        state = app_state(app)
        async with state.db.transaction() as db:
            task = await db.get(Task, uuid.UUID(t["id"]))
            assert task is not None
            execution = await runner.create_execution(db, task, {}, "manual")  # queued, not yet dispatched
        r = await tasks.client.post(f"{TASKS}/executions/{execution.id}/cancel", headers=tasks.user.headers)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        await runner.run_execution(state, execution.id)  # the runner comes late: it must not start anything
        after = await tasks.execution(str(execution.id))
        assert after["status"] == "cancelled" and after["session_id"] is None and after["started_at"] is None
