"""Permission decisions through the real SDK and CLI: a person answers, the timeout, the path guard, rules and hooks."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from agent_api.models import StatusChange
from tests.conftest import SessionsApi, app_state, assert_error_shape, tar_members, wait_until

pytestmark = pytest.mark.slow


async def download(sessions: SessionsApi, session_id: str) -> dict[str, bytes | None]:
    r = await sessions.client.get(f"/api/v1/sessions/{session_id}/workdir/download", headers=sessions.user.headers)
    assert r.status_code == 200, r.text
    return tar_members(r.content)


async def pending_request(sessions: SessionsApi, session_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        items = await sessions.items(session_id, "permissions")
        return next((p for p in items if p["decision"] is None), None)

    return await wait_until(check, timeout=60)


async def turn_finished(sessions: SessionsApi, session_id: str, turn_id: str) -> dict[str, Any]:
    """Wait for the turn's metrics snapshot (written when the turn ends) and the session back to `active`."""

    async def check() -> dict[str, Any] | None:
        snaps = await sessions.items(session_id, "metrics/snapshots")
        return next((x for x in snaps if x["turn_id"] == turn_id), None)

    snapshot = await wait_until(check, timeout=90)
    await sessions.wait_status(session_id, "active")
    return snapshot


async def answer(sessions: SessionsApi, session_id: str, request_id: str, decision: str) -> httpx.Response:
    return await sessions.client.post(
        f"/api/v1/sessions/{session_id}/permissions/{request_id}",
        json={"decision": decision},
        headers=sessions.user.headers,
    )


def by_tool(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [i for i in items if i.get("tool_name", i.get("name")) == name]


class TestPersonAnswers:
    async def test_allow_lets_the_write_run(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write a.txt: hello", wait=False)
        assert r.status_code == 202, r.text
        turn_id = r.json()["turn_id"]

        request = await pending_request(sessions, s["id"])
        assert request["tool_name"] == "Write" and request["turn_id"] == turn_id
        assert request["input_summary"]["content"] == "hello"
        assert request["decided_by"] is None and request["decided_at"] is None
        await sessions.wait_status(s["id"], "waiting")
        assert not await download(sessions, s["id"]), "nothing may be written before the answer"
        current = await sessions.client.get(
            f"/api/v1/sessions/{s['id']}/metrics/current", headers=sessions.user.headers
        )
        assert current.json()["permission_requests_pending"] == 1

        answered = await answer(sessions, s["id"], request["id"], "allow")
        assert answered.status_code == 200, answered.text
        assert answered.json()["decision"] == "allow" and answered.json()["decided_by"] == "user"

        await turn_finished(sessions, s["id"], turn_id)
        assert (await download(sessions, s["id"]))["a.txt"] == b"hello"
        rows = await sessions.items(s["id"], "permissions")
        assert [(p["id"], p["decision"], p["decided_by"]) for p in by_tool(rows, "Write")] == [
            (request["id"], "allow", "user")
        ]
        assert rows[0]["decided_at"] is not None
        (write,) = by_tool(await sessions.items(s["id"], "tool-calls"), "Write")
        assert write["is_error"] is False and write["status"] == "completed"

    async def test_deny_leaves_no_file_and_cannot_be_answered_twice(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write a.txt: hello", wait=False)
        assert r.status_code == 202, r.text
        turn_id = r.json()["turn_id"]
        request = await pending_request(sessions, s["id"])

        answered = await answer(sessions, s["id"], request["id"], "deny")
        assert answered.status_code == 200, answered.text
        assert answered.json()["decision"] == "deny" and answered.json()["decided_by"] == "user"

        await turn_finished(sessions, s["id"], turn_id)
        assert "a.txt" not in await download(sessions, s["id"])
        rows = by_tool(await sessions.items(s["id"], "permissions"), "Write")
        assert [(p["decision"], p["decided_by"]) for p in rows] == [("deny", "user")]
        (write,) = by_tool(await sessions.items(s["id"], "tool-calls"), "Write")
        assert write["is_error"] is True

        again = await answer(sessions, s["id"], request["id"], "allow")
        assert_error_shape(again, 409, "permission_already_decided")
        rows = by_tool(await sessions.items(s["id"], "permissions"), "Write")
        assert rows[0]["decision"] == "deny", "a second answer must not change the first"

        unknown = await answer(sessions, s["id"], str(uuid.uuid4()), "allow")
        assert_error_shape(unknown, 404)

    async def test_a_request_whose_turn_is_torn_down_is_not_left_pending(
        self, app: object, sessions: SessionsApi
    ) -> None:
        """Shutdown closes agents mid-wait (cancelling the permission callback): the request ends decided."""
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write torn.txt: hello", wait=False)
        assert r.status_code == 202, r.text
        request = await pending_request(sessions, s["id"])
        await app_state(app).require_agents().close(uuid.UUID(s["id"]))

        async def settled() -> dict[str, Any] | None:
            rows = await sessions.items(s["id"], "permissions")
            row = next(p for p in rows if p["id"] == request["id"])
            return row if row["decision"] is not None else None

        row = await wait_until(settled, timeout=30)
        assert (row["decision"], row["decided_by"]) == ("deny", "cancelled")

    async def test_unanswered_request_is_denied_by_the_timeout(self, app: object, sessions: SessionsApi) -> None:
        settings = app_state(app).settings
        saved = settings.permission_timeout_s
        settings.permission_timeout_s = 1.0
        try:
            s = await sessions.create(permission_mode="default")
            r = await sessions.query(s["id"], "write late.txt: too late")
            # `wait` answers as soon as a person must decide; nobody does, and the timeout decides.
            assert r.status_code == 202 and r.json()["status"] == "waiting", r.text
            await turn_finished(sessions, s["id"], r.json()["turn_id"])
        finally:
            settings.permission_timeout_s = saved
        rows = by_tool(await sessions.items(s["id"], "permissions"), "Write")
        assert [(p["decision"], p["decided_by"]) for p in rows] == [("deny", "timeout")]
        waited = datetime.fromisoformat(rows[0]["decided_at"]) - datetime.fromisoformat(rows[0]["created_at"])
        assert waited.total_seconds() >= 0.9, "denied before the timeout ran out"
        assert "waiting" in await statuses_seen(app, s["id"]), "the request was never pending"
        assert "late.txt" not in await download(sessions, s["id"])
        assert (await sessions.get(s["id"]))["status"] == "active"


class TestPathGuard:
    @pytest.mark.parametrize("mode", ["bypassPermissions", "default"])
    async def test_file_tools_outside_the_directory_are_denied_and_recorded(
        self, tmp_path: Path, sessions: SessionsApi, mode: str
    ) -> None:
        marker = f"secret-{uuid.uuid4().hex}"
        secret = tmp_path / "secret.txt"
        secret.write_text(marker)
        outside = tmp_path / "outside.txt"  # the directory exists: only the guard stops the write
        s = await sessions.create(permission_mode=mode)
        r = await sessions.query(s["id"], f"write {outside}: x\nread {secret}\nread /etc/hostname")
        assert r.status_code == 200, r.text
        assert r.json()["turn_status"] == "completed"

        assert not outside.exists()
        rows = await sessions.items(s["id"], "permissions")
        assert rows and all(p["decision"] is not None for p in rows), "the guard never asks a person"
        guarded = [(p["tool_name"], p["decision"], p["decided_by"]) for p in rows]
        assert guarded == [
            ("Write", "deny", "path_guard"),
            ("Read", "deny", "path_guard"),
            ("Read", "deny", "path_guard"),
        ]
        assert str(outside) in rows[0]["reason"]

        hooks = [h for h in await sessions.items(s["id"], "hooks") if h["event"] == "PreToolUse"]
        assert [(h["tool_name"], h["outcome"]) for h in hooks] == [
            ("Write", "block"),
            ("Read", "block"),
            ("Read", "block"),
        ]
        assert not [h for h in await sessions.items(s["id"], "hooks") if h["event"] == "PostToolUse"]

        calls = await sessions.items(s["id"], "tool-calls")
        assert [c["name"] for c in calls] == ["Write", "Read", "Read"]
        assert all(c["is_error"] for c in calls)
        recorded = str(await sessions.items(s["id"], "messages")) + str(calls)
        assert marker not in recorded, "the outside file's content reached the agent"


class TestBlockedCommands:
    async def test_a_matching_bash_command_is_blocked_by_the_hook(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions", blocked_commands=[r"rm\s+-rf"])
        r = await sessions.query(s["id"], "write somedir/x.txt: 1\nrun: rm -rf somedir")
        assert r.status_code == 200, r.text
        assert r.json()["turn_status"] == "completed"

        calls = await sessions.items(s["id"], "tool-calls")
        assert [(c["name"], c["is_error"]) for c in calls] == [("Write", False), ("Bash", True)]
        assert calls[1]["input"]["command"] == "rm -rf somedir"
        hooks = [h for h in await sessions.items(s["id"], "hooks") if h["event"] == "PreToolUse"]
        assert [(h["tool_name"], h["outcome"]) for h in hooks] == [("Write", "continue"), ("Bash", "block")]
        assert "blocked pattern" in hooks[1]["reason"] and "rm" in hooks[1]["reason"]
        assert (await download(sessions, s["id"]))["somedir/x.txt"] == b"1"

    async def test_the_block_is_recorded_as_a_permission_decision(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions", blocked_commands=[r"rm\s+-rf"])
        r = await sessions.query(s["id"], "run: rm -rf nothing-here")
        assert r.status_code == 200, r.text
        rows = await sessions.items(s["id"], "permissions")
        assert [(p["tool_name"], p["decision"], p["decided_by"]) for p in rows] == [("Bash", "deny", "rule")]

    async def test_a_command_not_matching_runs(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions", blocked_commands=[r"rm\s+-rf"])
        r = await sessions.query(s["id"], "write somedir/x.txt: 1\nrun: rm somedir/x.txt")
        assert r.status_code == 200, r.text
        calls = await sessions.items(s["id"], "tool-calls")
        assert [(c["name"], c["is_error"]) for c in calls] == [("Write", False), ("Bash", False)]
        assert "somedir/x.txt" not in await download(sessions, s["id"])


class TestRules:
    async def test_disallowed_tool_is_denied_by_rule_even_in_bypass_mode(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions", disallowed_tools=["Write"])
        r = await sessions.query(s["id"], "write ruled.txt: no")
        assert r.status_code == 200, r.text
        assert r.json()["turn_status"] == "completed"
        rows = await sessions.items(s["id"], "permissions")
        assert [(p["tool_name"], p["decision"], p["decided_by"]) for p in rows] == [("Write", "deny", "rule")]
        assert "Write" in rows[0]["reason"]
        hooks = [h for h in await sessions.items(s["id"], "hooks") if h["event"] == "PreToolUse"]
        assert [(h["tool_name"], h["outcome"]) for h in hooks] == [("Write", "block")]
        assert "ruled.txt" not in await download(sessions, s["id"])

    async def test_allowed_tool_runs_in_default_mode_without_asking(self, app: object, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="default", allowed_tools=["Write"])
        r = await sessions.query(s["id"], "write ok.txt: yes")
        assert r.status_code == 200, r.text
        assert r.json()["turn_status"] == "completed"
        rows = await sessions.items(s["id"], "permissions")
        assert [(p["tool_name"], p["decision"], p["decided_by"]) for p in rows] == [("Write", "allow", "rule")]
        assert (await download(sessions, s["id"]))["ok.txt"] == b"yes"
        statuses = await statuses_seen(app, s["id"])
        assert "waiting" not in statuses, "an allow rule must not raise a pending request"

    async def test_rule_with_a_pattern_only_covers_matching_paths(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions", disallowed_tools=["Write(*.env)"])
        r = await sessions.query(s["id"], "write notes.txt: fine\nwrite prod.env: KEY=1")
        assert r.status_code == 200, r.text
        rows = await sessions.items(s["id"], "permissions")
        assert [(p["tool_name"], p["decision"], p["decided_by"]) for p in rows] == [
            ("Write", "allow", "mode"),
            ("Write", "deny", "rule"),
        ]
        files = await download(sessions, s["id"])
        assert files.get("notes.txt") == b"fine" and "prod.env" not in files


async def statuses_seen(app: object, session_id: str) -> set[str]:
    """Every status the session passed through, from its recorded status changes."""
    async with app_state(app).db.transaction() as db:
        stmt = select(StatusChange.to_status).where(StatusChange.session_id == uuid.UUID(session_id))
        return set((await db.scalars(stmt)).all())


class TestWaitingQueries:
    async def test_wait_answers_202_waiting_as_soon_as_a_person_must_decide(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        """Not held until the permission timeout: the request returns with what the turn waits for."""
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write waited.txt: after approval")
        assert r.status_code == 202, r.text
        waiting = r.json()
        assert waiting["status"] == "waiting" and waiting["id"] == s["id"]
        [pending] = waiting["pending_permissions"]
        assert pending["tool_name"] == "Write" and pending["input_summary"]["content"] == "after approval"
        assert datetime.fromisoformat(pending["expires_at"]) > datetime.now(
            datetime.fromisoformat(pending["expires_at"]).tzinfo
        )
        stored = await pending_request(sessions, s["id"])
        assert stored["id"] == pending["request_id"]
        answer = await client.post(
            f"/api/v1/sessions/{s['id']}/permissions/{pending['request_id']}",
            json={"decision": "allow"},
            headers=sessions.user.headers,
        )
        assert answer.status_code == 200, answer.text
        await turn_finished(sessions, s["id"], waiting["turn_id"])
        assert (await download(sessions, s["id"]))["waited.txt"] == b"after approval"

    async def test_a_turn_that_needs_nobody_still_waits_to_the_end(self, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="acceptEdits")
        r = await sessions.query(s["id"], "write direct.txt: no question")
        assert r.status_code == 200 and r.json()["turn_status"] == "completed", r.text
        assert r.json()["pending_permissions"] == []
