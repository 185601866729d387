"""Webhook events from real work: turns, permission requests answered from the webhook alone, task executions and
budgets, through the real SDK and CLI against the offline model, delivered over HTTP to a receiver on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from agent_api.app import create_app
from tests.conftest import SessionsApi, UserAccount, make_settings, wait_until
from tests.monitoring.factories import set_budget
from tests.tasks.conftest import TasksApi
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    settings = make_settings(tmp_path_factory.mktemp("data"), database_url, webhook_allowed_hosts=["127.0.0.1"])
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


async def subscribe(client: httpx.AsyncClient, user: UserAccount, receiver: Receiver, *events: str) -> str:
    r = await client.post("/api/v1/webhooks", json={"url": receiver.url, "events": list(events)}, headers=user.headers)
    assert r.status_code == 201, r.text
    return r.json()["secret"]  # type: ignore[no-any-return]


async def heard(receiver: Receiver, secret: str, event_type: str, **match: Any) -> dict[str, Any]:
    """The first verified payload of `event_type` whose data has the `match` values."""

    async def check() -> dict[str, Any] | None:
        for message in receiver.received:
            payload = Verifier(secret).verify(message.body, message.headers)
            data = payload["data"]
            if payload["type"] == event_type and all(data.get(k) == v for k, v in match.items()):
                return payload  # type: ignore[no-any-return]
        return None

    return await wait_until(check, timeout=60)


class TestTurnEvents:
    async def test_turn_completed_is_signed_and_thin(
        self, sessions: SessionsApi, client: httpx.AsyncClient, owner: UserAccount, receiver: Receiver
    ) -> None:
        secret = await subscribe(client, owner, receiver, "turn.completed", "turn.failed")
        s = await sessions.create(permission_mode="bypassPermissions")
        r = await sessions.query(s["id"], "a secret-looking answer 7f3a9")
        assert r.status_code == 200, r.text
        payload = await heard(receiver, secret, "turn.completed", turn_id=r.json()["turn_id"])
        data = payload["data"]
        assert data["session_id"] == s["id"] and data["status"] == "completed" and data["is_error"] is False
        assert data["cost_usd"] == pytest.approx(r.json()["cost_usd"])
        assert data["path"].startswith(f"/api/v1/sessions/{s['id']}")
        # The turn's output stays on the server.
        assert "7f3a9" not in json.dumps(payload)
        assert not [m for m in receiver.received if m.payload["type"] == "turn.failed"]


class TestApprovalFromAWebhook:
    async def test_a_receiver_answers_the_request_it_was_sent(
        self, sessions: SessionsApi, client: httpx.AsyncClient, owner: UserAccount, receiver: Receiver
    ) -> None:
        secret = await subscribe(
            client, owner, receiver, "permission.requested", "permission.decided", "turn.completed"
        )
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write note.txt: from a script", wait=False)
        assert r.status_code == 202, r.text
        requested = (await heard(receiver, secret, "permission.requested", session_id=s["id"]))["data"]
        assert requested["tool_name"] == "Write" and requested["expires_at"]
        assert requested["input_summary"]["file_path"].endswith("note.txt")
        # Everything needed to answer is in the webhook.
        answer = await client.post(requested["path"], json={"decision": "allow"}, headers=owner.headers)
        assert answer.status_code == 200, answer.text
        decided = await heard(receiver, secret, "permission.decided", request_id=requested["request_id"])
        assert decided["data"]["decision"] == "allow" and decided["data"]["decided_by"] == "user"
        await heard(receiver, secret, "turn.completed", turn_id=r.json()["turn_id"])


class TestTaskAndBudgetEvents:
    async def test_task_execution_completed(
        self, client: httpx.AsyncClient, owner: UserAccount, receiver: Receiver
    ) -> None:
        secret = await subscribe(client, owner, receiver, "task_execution.completed", "task_execution.failed")
        tasks = TasksApi(client, owner)
        task = await tasks.create(permission_mode="bypassPermissions", generate_report=False)
        execution = (await tasks.execute(task["id"])).json()
        done = await tasks.wait_finished(execution["id"])
        assert done["status"] == "completed"
        data = (await heard(receiver, secret, "task_execution.completed", execution_id=execution["id"]))["data"]
        assert data["task_id"] == task["id"] and data["status"] == "completed"
        assert data["path"] == f"/api/v1/tasks/executions/{execution['id']}"

    async def test_budget_warning_and_exceeded(
        self, app: object, sessions: SessionsApi, client: httpx.AsyncClient, owner: UserAccount, receiver: Receiver
    ) -> None:
        secret = await subscribe(client, owner, receiver, "budget.warning", "budget.exceeded")
        await set_budget(app, owner.id, 0.000001)  # the first turn crosses both levels
        s = await sessions.create(permission_mode="bypassPermissions")
        assert (await sessions.query(s["id"], "hello")).status_code == 200
        warning = (await heard(receiver, secret, "budget.warning", session_id=s["id"]))["data"]
        exceeded = (await heard(receiver, secret, "budget.exceeded", session_id=s["id"]))["data"]
        for data in (warning, exceeded):
            assert data["user_id"] == owner.id and data["monthly_budget_usd"] == 0.000001
            assert data["path"] == f"/api/v1/monitoring/costs/budget/{owner.id}"
