"""Helpers over the task routes for one user."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import UserAccount, wait_until

TASKS = "/api/v1/tasks"
FINISHED = {"completed", "failed", "cancelled", "timed_out", "skipped"}


class TasksApi:
    def __init__(self, client: httpx.AsyncClient, user: UserAccount) -> None:
        self.client = client
        self.user = user

    async def create(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "a task")
        body.setdefault("prompt_template", "hello")
        r = await self.client.post(TASKS, json=body, headers=self.user.headers)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def execute(self, task_id: str, headers: dict[str, str] | None = None, **variables: Any) -> httpx.Response:
        return await self.client.post(
            f"{TASKS}/{task_id}/execute",
            json={"variables": variables},
            headers={**self.user.headers, **(headers or {})},
        )

    async def execution(self, execution_id: str) -> dict[str, Any]:
        r = await self.client.get(f"{TASKS}/executions/{execution_id}", headers=self.user.headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def executions(self, task_id: str, **params: Any) -> dict[str, Any]:
        r = await self.client.get(
            f"{TASKS}/{task_id}/executions", params={"page_size": 100, **params}, headers=self.user.headers
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def wait_finished(self, execution_id: str, timeout: float = 90) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            e = await self.execution(execution_id)
            return e if e["status"] in FINISHED else None

        return await wait_until(check, timeout)


@pytest.fixture
def tasks(client: httpx.AsyncClient, owner: UserAccount) -> TasksApi:
    return TasksApi(client, owner)
