"""Turns through the real SDK and CLI against the offline model: what they record, live-client reuse, resume, control."""

from __future__ import annotations

import uuid

import httpx
import pytest

from agent_api.runtime.endpoint import sandbox_available
from agent_api.sessions import service
from tests.conftest import SessionsApi, Users, app_state, assert_error_shape, tar_members, wait_until

pytestmark = pytest.mark.slow


class TestFirstTurn:
    async def test_write_and_bash_are_recorded_and_downloadable(
        self, app: object, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(name="first", permission_mode="bypassPermissions")
        assert s["status"] in ("created", "connecting", "active")
        assert s["model"] == "offline-echo-1"
        r = await sessions.query(s["id"], "write hello.txt: hi there\nrun: ls")
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["id"] == s["id"] and done["turn_status"] == "completed" and done["is_error"] is False
        assert done["cost_usd"] > 0 and done["usage"]["input_tokens"] > 0 and done["num_turns"] >= 2
        assert "hello.txt" in done["result"]

        tools = await sessions.items(s["id"], "tool-calls")
        assert [t["name"] for t in tools] == ["Write", "Bash"]
        assert all(t["status"] == "completed" and t["finished_at"] and t["duration_ms"] is not None for t in tools)
        assert tools[0]["input"]["content"] == "hi there"
        assert "hello.txt" in str(tools[1]["output"])  # ls saw the file the Write made

        messages = await sessions.items(s["id"], "messages")
        assert messages[0]["role"] == "user" and messages[0]["text"] == "write hello.txt: hi there\nrun: ls"
        block_types = {b["type"] for m in messages for b in m["content"]}
        assert {"text", "tool_use", "tool_result"} <= block_types
        assert all(m["turn_id"] == done["turn_id"] for m in messages)

        hooks = await sessions.items(s["id"], "hooks")
        events = {h["event"] for h in hooks}
        assert {"PreToolUse", "PostToolUse", "Stop"} <= events
        permissions = await sessions.items(s["id"], "permissions")
        assert {(p["tool_name"], p["decision"], p["decided_by"]) for p in permissions} == {
            ("Write", "allow", "mode"),
            ("Bash", "allow", "mode"),
        }

        snapshots = await sessions.items(s["id"], "metrics/snapshots")
        assert len(snapshots) == 1
        assert snapshots[0]["tool_calls_by_tool"] == {"Write": 1, "Bash": 1}
        assert snapshots[0]["cost_usd"] == pytest.approx(done["cost_usd"])
        assert snapshots[0]["input_tokens"] == done["usage"]["input_tokens"]

        session = await sessions.get(s["id"])
        assert session["status"] == "active"
        assert session["total_cost_usd"] == pytest.approx(done["cost_usd"])
        assert session["total_input_tokens"] == done["usage"]["input_tokens"]
        assert session["tool_call_count"] == 2 and session["turn_count"] == 1
        assert session["message_count"] == len(messages)

        current = (
            await client.get(f"/api/v1/sessions/{s['id']}/metrics/current", headers=sessions.user.headers)
        ).json()
        assert current["tool_calls_by_tool"] == {"Write": 1, "Bash": 1} and current["live"] is True

        download = await client.get(f"/api/v1/sessions/{s['id']}/workdir/download", headers=sessions.user.headers)
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/gzip"
        assert f"{s['id']}-workdir.tar.gz" in download.headers["content-disposition"]
        assert tar_members(download.content)["hello.txt"] == b"hi there"

    async def test_costs_accumulate_on_the_user(self, app: object, users: Users, client: httpx.AsyncClient) -> None:
        from agent_api.models import User

        user = await users.create()
        api = SessionsApi(client, user)
        s = await api.create(permission_mode="bypassPermissions")
        first = (await api.query(s["id"], "one")).json()
        assert "cost_usd" in first, first
        second = (await api.query(s["id"], "two")).json()
        async with app_state(app).db.transaction() as db:
            row = await db.get(User, uuid.UUID(user.id))
            assert row is not None
            assert row.total_cost_usd == pytest.approx(first["cost_usd"] + second["cost_usd"])
        # The SDK reports a running total; each turn is charged only its own share.
        assert 0 < second["cost_usd"] < first["cost_usd"] + second["cost_usd"]


class TestLiveClient:
    async def test_follow_up_reuses_the_client_and_idle_resume_keeps_context(
        self, app: object, sessions: SessionsApi
    ) -> None:
        state = app_state(app)
        pool = state.require_agents()
        s = await sessions.create(permission_mode="bypassPermissions")
        sid = uuid.UUID(s["id"])
        await sessions.wait_status(s["id"], "active")  # started in the background, before any message
        agent = pool._agents[sid]
        first = await sessions.query(s["id"], "remember the word pelican")
        assert first.status_code == 200 and first.json()["result"] == "Echo: remember the word pelican"
        second = await sessions.query(s["id"], "second message")
        assert second.json()["turn_status"] == "completed"
        assert pool._agents[sid] is agent, "a follow-up turn must reuse the live client"

        saved = pool.idle_timeout_s
        pool.idle_timeout_s = 0.3
        try:
            await wait_until(lambda: _not_live(pool, sid), timeout=20)
        finally:
            pool.idle_timeout_s = saved
        third = await sessions.query(s["id"], "recall")
        assert third.status_code == 200
        assert third.json()["result"] is not None and "remember the word pelican" in third.json()["result"]
        assert pool._agents[sid] is not agent

    async def test_pause_interrupts_a_long_turn(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        r = await sessions.query(s["id"], "sleep: 30", wait=False)
        assert r.status_code == 202
        turn_id = r.json()["turn_id"]
        await sessions.wait_status(s["id"], "processing")
        await wait_until(lambda: _prompt_submitted(sessions, s["id"]), timeout=30)
        paused = await client.post(f"/api/v1/sessions/{s['id']}/pause", headers=sessions.user.headers)
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        refused = await sessions.query(s["id"], "hello")
        assert_error_shape(refused, 409, "session_paused")

        async def turn_ended() -> bool:
            snaps = await sessions.items(s["id"], "metrics/snapshots")
            return any(x["turn_id"] == turn_id for x in snaps)

        await wait_until(turn_ended, timeout=30)
        assert (await sessions.get(s["id"]))["status"] == "paused"
        resumed = await client.post(f"/api/v1/sessions/{s['id']}/resume", headers=sessions.user.headers)
        assert resumed.status_code == 200 and resumed.json()["status"] == "active"
        assert (await sessions.query(s["id"], "after pause")).json()["result"] == "Echo: after pause"

    async def test_interrupt_stops_the_turn_without_pausing(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        r = await sessions.query(s["id"], "sleep: 30", wait=False)
        await wait_until(lambda: _prompt_submitted(sessions, s["id"]), timeout=30)
        stopped = await client.post(f"/api/v1/sessions/{s['id']}/interrupt", headers=sessions.user.headers)
        assert stopped.status_code == 200 and stopped.json()["interrupted"] is True
        session = await sessions.wait_status(s["id"], "active", timeout=30)
        assert session["status"] == "active"
        snaps = await sessions.items(s["id"], "metrics/snapshots")
        assert snaps[-1]["turn_id"] == r.json()["turn_id"]
        assert (await sessions.query(s["id"], "still here")).json()["result"] == "Echo: still here"


class TestEarlyInterrupt:
    async def test_an_interrupt_right_after_the_query_is_not_lost(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        r = await sessions.query(s["id"], "sleep: 30", wait=False)
        assert r.status_code == 202
        stopped = await client.post(f"/api/v1/sessions/{s['id']}/interrupt", headers=sessions.user.headers)
        assert stopped.json()["interrupted"] is True
        await sessions.wait_status(s["id"], "active", timeout=20)  # long before the 30 s answer would end

        async def interrupted_turn() -> bool:
            snaps = await sessions.items(s["id"], "metrics/snapshots")
            return any(x["turn_id"] == r.json()["turn_id"] for x in snaps)

        await wait_until(interrupted_turn, timeout=20)
        assert (await sessions.query(s["id"], "next")).json()["result"] == "Echo: next"


class TestDelete:
    async def test_delete_ends_the_client_and_removes_the_directory(
        self, app: object, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        state = app_state(app)
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.query(s["id"], "write a.txt: x")
        path = service.workdir_of(state, uuid.UUID(s["id"]))
        assert (path / "a.txt").read_text() == "x"
        r = await client.delete(f"/api/v1/sessions/{s['id']}", headers=sessions.user.headers)
        assert r.status_code == 204
        assert not path.exists()
        assert not state.require_agents().is_live(uuid.UUID(s["id"]))
        assert (await sessions.get(s["id"]))["status"] == "terminated"
        assert_error_shape(await sessions.query(s["id"], "hi"), 409, "session_terminated")


class TestRestartRecovery:
    async def test_a_turn_left_running_is_marked_interrupted(self, app: object, sessions: SessionsApi) -> None:
        from agent_api.event_log import change_status
        from agent_api.models import Session, Turn

        state = app_state(app)
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        sid = uuid.UUID(s["id"])
        async with state.db.transaction() as db:
            row = await db.get(Session, sid)
            assert row is not None
            await change_status(db, row, "processing", "simulated crash mid-turn")
            turn = Turn(session_id=sid, user_id=row.user_id, prompt="lost", status="running")
            db.add(turn)
        await service.recover_after_restart(state)
        assert (await sessions.get(s["id"]))["status"] == "active"
        async with state.db.transaction() as db:
            again = await db.get(Turn, turn.id)
            assert again is not None and again.status == "interrupted"
        assert (await sessions.query(s["id"], "after restart")).json()["result"] == "Echo: after restart"


async def _not_live(pool: object, sid: uuid.UUID) -> bool:
    return not pool.is_live(sid)  # type: ignore[attr-defined]


async def _prompt_submitted(sessions: SessionsApi, session_id: str) -> bool:
    """The CLI has taken the prompt (its UserPromptSubmit hook ran), so the turn is under way."""
    hooks = await sessions.items(session_id, "hooks")
    return any(h["event"] == "UserPromptSubmit" for h in hooks)


@pytest.mark.skipif(not sandbox_available(), reason="bubblewrap and socat are not installed (CI installs them)")
class TestSandbox:
    async def test_sandboxed_bash_cannot_write_outside_the_directory(
        self, app: object, client: httpx.AsyncClient, sessions: SessionsApi, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        assert app_state(app).bash_sandboxed
        outside = tmp_path_factory.mktemp("outside") / f"escape-{uuid.uuid4().hex}.txt"
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], f"run: touch {outside}\nrun: touch inside.txt")
        assert r.json()["turn_status"] == "completed"
        calls = await sessions.items(s["id"], "tool-calls")
        assert [c["is_error"] for c in calls] == [True, False]
        assert "Read-only file system" in str(calls[0]["output"])
        assert not outside.exists()
        download = await client.get(f"/api/v1/sessions/{s['id']}/workdir/download", headers=sessions.user.headers)
        assert "inside.txt" in tar_members(download.content)
        health = (await client.get("/api/v1/monitoring/health/sdk")).json()
        assert health["sandbox"]["bash_sandboxed"] is True

    async def test_sandboxed_bash_cannot_read_the_data_dir(
        self, app: object, client: httpx.AsyncClient, sessions: SessionsApi, users: Users
    ) -> None:
        """Not the secret key, not the database, not another user's files: only its own directory."""
        settings = app_state(app).settings
        data_dir = settings.data_dir.resolve()
        database = settings.resolved_database_url.split("///", 1)[-1]
        other = await SessionsApi(client, await users.create()).create()
        other_file = service.workdir_of(app_state(app), uuid.UUID(other["id"])) / "private.txt"
        other_file.write_text("someone else's notes")
        s = await sessions.create(permission_mode="default")
        secret = (data_dir / "secret_key").read_text() if (data_dir / "secret_key").exists() else settings.secret_key
        command = (
            f"run: (cat {data_dir}/secret_key; cat {other_file}; ls {data_dir}/claude; "
            f"head -c 15 {database}; cat mine.txt) > seen.txt 2>&1"
        )
        (service.workdir_of(app_state(app), uuid.UUID(s["id"])) / "mine.txt").write_text("my own file")
        r = await sessions.query(s["id"], command)
        assert r.json()["turn_status"] == "completed", r.text
        download = await client.get(f"/api/v1/sessions/{s['id']}/workdir/download", headers=sessions.user.headers)
        seen = (tar_members(download.content)["seen.txt"] or b"").decode()
        assert "my own file" in seen  # the command ran, and its own directory is readable
        assert "someone else's notes" not in seen
        assert "SQLite format" not in seen  # a SQLite database kept outside the data dir is hidden too
        assert secret and secret not in seen


class TestHealthReportsTheModel:
    async def test_offline_model_is_labelled(self, client: httpx.AsyncClient) -> None:
        health = (await client.get("/api/v1/monitoring/health/sdk")).json()
        assert health["model_endpoint"]["kind"] == "offline" and health["model_endpoint"]["offline"] is True
        assert health["model_endpoint"]["model"] == "offline-echo-1"
        assert "OFFLINE MODEL" in health["warning"]
