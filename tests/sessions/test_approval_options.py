"""Approvals nobody is watching, through the real SDK and CLI: the session's permission timeout and what it becomes,
and answers that `remember` a rule for the session. Bash asks here: this module's server runs without the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from agent_api.app import create_app
from tests.conftest import SessionsApi, assert_error_shape, make_settings, wait_until
from tests.sessions.test_permissions import by_tool, download, pending_request, statuses_seen, turn_finished
from tests.tasks.conftest import TasksApi

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    application = create_app(make_settings(tmp_path_factory.mktemp("data"), database_url, sandbox="off"))
    async with application.router.lifespan_context(application):
        yield application


async def answer(
    sessions: SessionsApi, session_id: str, request_id: str, decision: str, **extra: Any
) -> httpx.Response:
    return await sessions.client.post(
        f"/api/v1/sessions/{session_id}/permissions/{request_id}",
        json={"decision": decision, **extra},
        headers=sessions.user.headers,
    )


async def next_pending(sessions: SessionsApi, session_id: str, seen: set[str]) -> dict[str, Any]:
    """The next request still waiting for a person that is not one of `seen`."""

    async def check() -> dict[str, Any] | None:
        items = await sessions.items(session_id, "permissions")
        return next((p for p in items if p["decision"] is None and p["id"] not in seen), None)

    found = await wait_until(check, timeout=60)
    seen.add(found["id"])
    return found


def decisions(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(p["tool_name"], p["decision"], p["decided_by"]) for p in rows]


class TestRememberForTheSession:
    async def test_an_allowed_write_is_remembered_for_the_rest_of_the_turn_and_later_turns(
        self, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write one.txt: 1\nwrite two.txt: 2", wait=False)
        assert r.status_code == 202, r.text
        first = await pending_request(sessions, s["id"])
        answered = await answer(sessions, s["id"], first["id"], "allow", remember="session")
        assert answered.status_code == 200, answered.text
        assert answered.json()["remembered_rule"] == "Write" and answered.json()["decided_by"] == "user"
        await turn_finished(sessions, s["id"], r.json()["turn_id"])
        assert (await sessions.get(s["id"]))["allowed_tools"] == ["Write"]

        # The live agent took the rule for the second call of the same turn: no second request.
        assert decisions(by_tool(await sessions.items(s["id"], "permissions"), "Write")) == [
            ("Write", "allow", "user"),
            ("Write", "allow", "rule"),
        ]
        later = await sessions.query(s["id"], "write three.txt: 3")
        assert later.status_code == 200 and later.json()["pending_permissions"] == [], later.text
        rows = by_tool(await sessions.items(s["id"], "permissions"), "Write")
        assert decisions(rows)[-1] == ("Write", "allow", "rule") and "Write" in rows[-1]["reason"]
        files = await download(sessions, s["id"])
        assert (files["one.txt"], files["two.txt"], files["three.txt"]) == (b"1", b"2", b"3")

    async def test_a_remembered_deny_goes_to_disallowed_tools(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write no.txt: x", wait=False)
        request = await pending_request(sessions, s["id"])
        answered = await answer(sessions, s["id"], request["id"], "deny", remember="session")
        assert answered.status_code == 200 and answered.json()["remembered_rule"] == "Write", answered.text
        await turn_finished(sessions, s["id"], r.json()["turn_id"])
        session = await sessions.get(s["id"])
        assert session["disallowed_tools"] == ["Write"] and session["allowed_tools"] == []
        later = await sessions.query(s["id"], "write still-no.txt: x")
        assert later.status_code == 200, later.text
        assert decisions(by_tool(await sessions.items(s["id"], "permissions"), "Write")) == [
            ("Write", "deny", "user"),
            ("Write", "deny", "rule"),
        ]
        files = await download(sessions, s["id"])
        assert "no.txt" not in files and "still-no.txt" not in files

    async def test_a_bash_rule_keeps_the_leading_words_and_never_covers_a_compound_command(
        self, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "run: echo hi", wait=False)
        request = await pending_request(sessions, s["id"])
        answered = await answer(sessions, s["id"], request["id"], "allow", remember="session")
        assert answered.json()["remembered_rule"] == "Bash(echo hi:*)", answered.text
        await turn_finished(sessions, s["id"], r.json()["turn_id"])
        assert (await sessions.get(s["id"]))["allowed_tools"] == ["Bash(echo hi:*)"]

        prompt = "run: echo hi again\nrun: echo hi && touch pwned.txt\nrun: echo hi; touch pwned2.txt\nrun: echo hix"
        r = await sessions.query(s["id"], prompt, wait=False)
        assert r.status_code == 202, r.text
        seen = {request["id"]}
        asked = []
        for _ in range(3):  # none of these is covered by the rule: each one asks, and is denied
            pending = await next_pending(sessions, s["id"], seen)
            asked.append(pending["input_summary"]["command"])
            assert (await answer(sessions, s["id"], pending["id"], "deny")).status_code == 200
        await turn_finished(sessions, s["id"], r.json()["turn_id"])
        assert asked == ["echo hi && touch pwned.txt", "echo hi; touch pwned2.txt", "echo hix"]
        rows = by_tool(await sessions.items(s["id"], "permissions"), "Bash")
        assert decisions(rows) == [
            ("Bash", "allow", "user"),
            ("Bash", "allow", "rule"),
            ("Bash", "deny", "user"),
            ("Bash", "deny", "user"),
            ("Bash", "deny", "user"),
        ]
        assert rows[1]["input_summary"]["command"] == "echo hi again"
        files = await download(sessions, s["id"])
        assert "pwned.txt" not in files and "pwned2.txt" not in files

    async def test_a_compound_command_is_allowed_once_and_nothing_is_remembered(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "run: echo a && touch made.txt", wait=False)
        request = await pending_request(sessions, s["id"])
        answered = await answer(sessions, s["id"], request["id"], "allow", remember="session")
        assert answered.status_code == 200, answered.text
        assert answered.json()["remembered_rule"] is None and answered.json()["decision"] == "allow"
        await turn_finished(sessions, s["id"], r.json()["turn_id"])
        session = await sessions.get(s["id"])
        assert session["allowed_tools"] == [] and session["disallowed_tools"] == []
        assert "made.txt" in await download(sessions, s["id"]), "the answer itself still applies"

    @pytest.mark.parametrize("remember", ["forever", "Session", True, ["session"], ""])
    async def test_another_remember_value_is_refused_and_changes_nothing(
        self, sessions: SessionsApi, remember: object
    ) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write later.txt: x", wait=False)
        request = await pending_request(sessions, s["id"])
        assert_error_shape(await answer(sessions, s["id"], request["id"], "allow", remember=remember), 422)
        rows = await sessions.items(s["id"], "permissions")
        assert [p["decision"] for p in rows] == [None], "the request must still be pending"
        assert (await sessions.get(s["id"]))["allowed_tools"] == []
        assert (await answer(sessions, s["id"], request["id"], "deny")).status_code == 200
        await turn_finished(sessions, s["id"], r.json()["turn_id"])


class TestPermissionTimeout:
    async def test_allow_on_timeout_lets_the_call_run_and_says_so(self, app: object, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="default", permission_timeout_s=1, on_permission_timeout="allow")
        assert (s["permission_timeout_s"], s["on_permission_timeout"]) == (1, "allow")
        r = await sessions.query(s["id"], "write unattended.txt: went ahead")
        assert r.status_code == 202 and r.json()["status"] == "waiting", r.text
        [pending] = r.json()["pending_permissions"]
        await turn_finished(sessions, s["id"], r.json()["turn_id"])

        [row] = by_tool(await sessions.items(s["id"], "permissions"), "Write")
        assert (row["id"], row["decision"], row["decided_by"]) == (pending["request_id"], "allow", "timeout")
        assert row["reason"] == "no answer in 1 s; allowed by the session's on_permission_timeout"
        created = datetime.fromisoformat(row["created_at"])
        assert 0.9 <= (datetime.fromisoformat(pending["expires_at"]) - created).total_seconds() <= 1.1
        assert (datetime.fromisoformat(row["decided_at"]) - created).total_seconds() >= 0.9
        assert "waiting" in await statuses_seen(app, s["id"])
        assert (await download(sessions, s["id"]))["unattended.txt"] == b"went ahead"

    async def test_deny_on_timeout_uses_the_sessions_own_timeout(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="default", permission_timeout_s=1.5, on_permission_timeout="deny")
        r = await sessions.query(s["id"], "write refused.txt: x")
        assert r.status_code == 202 and r.json()["status"] == "waiting", r.text
        await turn_finished(sessions, s["id"], r.json()["turn_id"])
        [row] = by_tool(await sessions.items(s["id"], "permissions"), "Write")
        assert (row["decision"], row["decided_by"]) == ("deny", "timeout")
        assert row["reason"] == "no answer in 1.5 s; denied (on_permission_timeout: deny)"
        assert "refused.txt" not in await download(sessions, s["id"])

    async def test_a_task_denied_by_the_timeout_fails_with_a_clear_error(self, tasks: TasksApi) -> None:
        t = await tasks.create(
            prompt_template="write report.txt: unattended",
            permission_mode="default",
            permission_timeout_s=1,
            on_permission_timeout="deny",
        )
        assert (t["permission_timeout_s"], t["on_permission_timeout"]) == (1, "deny")
        done = await tasks.wait_finished((await tasks.execute(t["id"])).json()["id"])
        assert (done["status"], done["error_code"]) == ("failed", "permission_timeout"), done
        assert done["error_message"].startswith("Write needed a permission decision and nobody answered within 1 s")
        assert done["result_data"]["turn_status"] == "completed", "the turn itself ended normally"
        sessions = SessionsApi(tasks.client, tasks.user)
        rows = await sessions.items(done["session_id"], "permissions")
        assert decisions(rows) == [("Write", "deny", "timeout")]

    async def test_a_task_allowed_by_the_timeout_completes(self, tasks: TasksApi) -> None:
        t = await tasks.create(
            prompt_template="write report.txt: unattended",
            permission_mode="default",
            permission_timeout_s=1,
            on_permission_timeout="allow",
        )
        done = await tasks.wait_finished((await tasks.execute(t["id"])).json()["id"])
        assert done["status"] == "completed" and done["error_code"] is None, done
        rows = await SessionsApi(tasks.client, tasks.user).items(done["session_id"], "permissions")
        assert decisions(rows) == [("Write", "allow", "timeout")]


@pytest.fixture
def tasks(client: httpx.AsyncClient, sessions: SessionsApi) -> TasksApi:
    return TasksApi(client, sessions.user)
