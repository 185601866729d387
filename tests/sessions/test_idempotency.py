"""`Idempotency-Key`: one turn per key, the stored answer for a retry, and a refusal for another request."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.conftest import SessionsApi, app_state, assert_error_shape, wait_until
from tests.tasks.conftest import TasksApi

SESSIONS = "/api/v1/sessions"
pytestmark = pytest.mark.slow


def keyed(sessions: SessionsApi, key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key or f"k-{uuid.uuid4().hex}", **sessions.user.headers}


async def turn_count(sessions: SessionsApi, session_id: str) -> int:
    return int((await sessions.get(session_id))["turn_count"])


class TestAnotherRequestUnderTheSameKey:
    async def test_another_message_or_fork_is_refused_and_changes_nothing(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        url, headers = f"{SESSIONS}/{s['id']}/query", keyed(sessions)
        first = await client.post(url, json={"message": "first", "wait": True}, headers=headers, timeout=60)
        assert first.status_code == 200, first.text
        for other in ({"message": "second", "wait": True}, {"message": "first", "wait": True, "fork": True}):
            r = await client.post(url, json=other, headers=headers)
            assert_error_shape(r, 422, "idempotency_key_reused")
        assert await turn_count(sessions, s["id"]) == 1
        forks = await client.get(SESSIONS, params={"is_fork": True}, headers=sessions.user.headers)
        assert forks.json()["total"] == 0

    async def test_key_order_and_ignored_fields_do_not_make_another_request(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        url, headers = f"{SESSIONS}/{s['id']}/query", keyed(sessions)
        first = await client.post(url, json={"message": "same", "wait": True}, headers=headers, timeout=60)
        again = await client.post(
            url, json={"wait": True, "message": "same", "client_hint": "ignored"}, headers=headers, timeout=60
        )
        assert again.status_code == 200 and again.headers["idempotent-replay"] == "true"
        assert again.json() == first.json()
        assert await turn_count(sessions, s["id"]) == 1

    async def test_fork_and_task_execute_refuse_another_body(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        tasks = TasksApi(client, sessions.user)
        s = await sessions.create()
        headers = keyed(sessions)
        made = await client.post(f"{SESSIONS}/{s['id']}/fork", json={"name": "one"}, headers=headers)
        assert made.status_code == 201, made.text
        other = await client.post(f"{SESSIONS}/{s['id']}/fork", json={"name": "two"}, headers=headers)
        assert_error_shape(other, 422, "idempotency_key_reused")

        t = await tasks.create(prompt_template="hello {{who}}")
        key = {"Idempotency-Key": f"x-{uuid.uuid4().hex}"}
        first = await tasks.execute(t["id"], headers=key, who="ann")
        assert first.status_code == 202, first.text
        assert_error_shape(await tasks.execute(t["id"], headers=key, who="bob"), 422)
        await tasks.wait_finished(first.json()["id"])
        assert (await tasks.executions(t["id"]))["total"] == 1


class TestWaitingRequests:
    async def test_a_retry_while_the_first_waits_gets_409_then_the_answer(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        url, headers = f"{SESSIONS}/{s['id']}/query", keyed(sessions)
        body = {"message": "sleep: 2", "wait": True}
        first = asyncio.create_task(client.post(url, json=body, headers=headers, timeout=60))
        await sessions.wait_status(s["id"], "processing")
        retry = await client.post(url, json=body, headers=headers)
        assert_error_shape(retry, 409, "idempotency_in_progress")
        done = await first
        assert done.status_code == 200, done.text
        after = await client.post(url, json=body, headers=headers)
        assert after.status_code == 200 and after.json() == done.json()
        assert after.headers["idempotent-replay"] == "true"
        assert await turn_count(sessions, s["id"]) == 1

    async def test_a_wait_that_times_out_is_remembered(
        self, app: object, client: httpx.AsyncClient, sessions: SessionsApi, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(app_state(app).settings, "query_wait_timeout_s", 0.5)
        s = await sessions.create(permission_mode="bypassPermissions")
        url, headers = f"{SESSIONS}/{s['id']}/query", keyed(sessions)
        body = {"message": "sleep: 3", "wait": True}
        first = await client.post(url, json=body, headers=headers, timeout=60)
        assert first.status_code == 202 and first.json()["status"] == "processing", first.text
        retry = await client.post(url, json=body, headers=headers)
        assert retry.status_code == 202 and retry.json() == first.json()
        assert retry.headers["idempotent-replay"] == "true"
        await sessions.wait_status(s["id"], "active")
        assert await turn_count(sessions, s["id"]) == 1


class TestConcurrentRetries:
    async def test_ten_identical_requests_make_one_turn(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        url, headers = f"{SESSIONS}/{s['id']}/query", keyed(sessions)
        body = {"message": f"once {uuid.uuid4().hex}"}
        responses = await asyncio.gather(*(client.post(url, json=body, headers=headers) for _ in range(10)))
        first = [r for r in responses if "idempotent-replay" not in r.headers]
        assert len(first) == 1 and first[0].status_code == 202, [r.text for r in responses]
        # A replay answers the turn as it is now: 202 while it runs, 200 once it has finished (it may be that fast).
        assert {r.status_code for r in responses} <= {200, 202}, [r.text for r in responses]
        assert len({r.json()["turn_id"] for r in responses}) == 1
        await sessions.wait_status(s["id"], "active")

        async def one_turn() -> bool:
            return await turn_count(sessions, s["id"]) == 1

        assert await wait_until(one_turn)
        user_messages = [m for m in await sessions.items(s["id"], "messages") if m["text"] == body["message"]]
        assert len(user_messages) == 1


class TestARetryAnswersTheStateNow:
    """A 202 is not a final answer: a retry gets the turn (or execution) as it is now, never a second one."""

    async def test_a_waiting_query_retried_waits_again_then_gets_the_finished_turn(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        url, headers = f"{SESSIONS}/{s['id']}/query", keyed(sessions)
        body = {"message": "write keyed.txt: once", "wait": True}
        first = await client.post(url, json=body, headers=headers, timeout=60)
        assert first.status_code == 202 and first.json()["status"] == "waiting", first.text
        [pending] = first.json()["pending_permissions"]

        retry = await client.post(url, json=body, headers=headers, timeout=60)
        assert retry.status_code == 202 and retry.headers["idempotent-replay"] == "true", retry.text
        assert retry.json()["status"] == "waiting" and retry.json()["turn_id"] == first.json()["turn_id"]
        assert [p["request_id"] for p in retry.json()["pending_permissions"]] == [pending["request_id"]]

        answered = await client.post(
            f"{SESSIONS}/{s['id']}/permissions/{pending['request_id']}",
            json={"decision": "allow"},
            headers=sessions.user.headers,
        )
        assert answered.status_code == 200, answered.text
        final = await client.post(url, json=body, headers=headers, timeout=60)
        assert final.status_code == 200, final.text
        done = final.json()
        assert done["turn_status"] == "completed" and done["turn_id"] == first.json()["turn_id"]
        assert done["pending_permissions"] == [] and final.headers["idempotent-replay"] == "true"
        again = await client.post(url, json=body, headers=headers)
        assert again.status_code == 200 and again.json() == done
        assert await turn_count(sessions, s["id"]) == 1

    async def test_a_query_without_wait_retried_gets_waiting_then_the_outcome(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        url, headers = f"{SESSIONS}/{s['id']}/query", keyed(sessions)
        body = {"message": "write later.txt: x"}
        first = await client.post(url, json=body, headers=headers)
        assert first.status_code == 202 and first.json()["status"] == "processing", first.text
        await sessions.wait_status(s["id"], "waiting")

        retry = await client.post(url, json=body, headers=headers)
        assert retry.status_code == 202 and retry.json()["status"] == "waiting", retry.text
        [pending] = retry.json()["pending_permissions"]
        assert pending["tool_name"] == "Write"
        r = await client.post(
            f"{SESSIONS}/{s['id']}/permissions/{pending['request_id']}",
            json={"decision": "deny"},
            headers=sessions.user.headers,
        )
        assert r.status_code == 200, r.text

        async def finished() -> httpx.Response | None:
            answer = await client.post(url, json=body, headers=headers)
            return answer if answer.status_code == 200 else None

        final = await wait_until(finished, timeout=60, interval=0.2)
        assert final.json()["turn_id"] == first.json()["turn_id"] and final.json()["turn_status"] == "completed"
        assert await turn_count(sessions, s["id"]) == 1

    async def test_a_task_execute_retry_gets_the_execution_as_it_is_now(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        tasks = TasksApi(client, sessions.user)
        t = await tasks.create(prompt_template="hello")
        key = {"Idempotency-Key": f"x-{uuid.uuid4().hex}"}
        first = await tasks.execute(t["id"], headers=key)
        assert first.status_code == 202 and first.json()["status"] in ("queued", "running"), first.text
        done = await tasks.wait_finished(first.json()["id"])
        retry = await tasks.execute(t["id"], headers=key)
        assert retry.status_code == 202 and retry.headers["idempotent-replay"] == "true", retry.text
        assert retry.json()["id"] == first.json()["id"] and retry.json()["status"] == done["status"] == "completed"
        assert (await tasks.executions(t["id"]))["total"] == 1
