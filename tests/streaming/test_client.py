"""`agent_api.client` and `agent-api chat` against a real server: REST, the stream, reconnects, refusals, the CLI."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api import event_log
from agent_api.client import AgentApiClient, ApiError, StreamClosed
from tests.conftest import SessionsApi, Users, app_state

Frame = dict[str, Any]


def persisted(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if "seq" in f]


def turn_over(frames: list[Frame]) -> bool:
    """A result arrived and, after it, the session went back to `active`."""
    results = [i for i, f in enumerate(frames) if f["type"] == "result"]
    return bool(results) and any(
        f["type"] == "status_change" and f["data"]["status"] == "active" for f in frames[results[-1] :]
    )


async def log_of(app: object, session_id: str) -> list[tuple[int, str]]:
    async with app_state(app).db.transaction(readonly=True) as db:
        rows = (await db.execute(event_log.events_after(uuid.UUID(session_id), 0, 10_000))).all()
    return [(r.seq, r.type) for r in rows]


class RecordingClient(AgentApiClient):
    """Records the query parameters of every stream connection it opens (the auth part left out)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connects: list[dict[str, Any]] = []

    async def _ws_url(self, session_id: str, params: dict[str, Any]) -> str:
        self.connects.append(dict(params))
        return await super()._ws_url(session_id, params)


class TestRest:
    async def test_error_shape_becomes_api_error(self, server_url: str) -> None:
        async with AgentApiClient(f"http://{server_url}") as api:
            with pytest.raises(ApiError) as info:
                await api.me()
        assert info.value.status == 401 and info.value.code and info.value.message
        assert info.value.request_id

    async def test_login_refreshes_once_on_401(self, server_url: str, users: Users) -> None:
        account = await users.create()
        async with AgentApiClient(f"http://{server_url}") as api:
            await api.login(account.username, account.password)
            first_refresh = api.refresh_token
            api.token = "expired-or-garbage"
            assert (await api.me())["username"] == account.username
            assert api.refresh_token != first_refresh and api.token != "expired-or-garbage"
            with pytest.raises(ApiError) as info:
                await api.get_session(str(uuid.uuid4()))
        assert (info.value.status, info.value.code) == (404, "session_not_found")


@pytest.mark.slow
class TestStream:
    async def test_login_create_and_query_through_the_stream(self, app: object, server_url: str, users: Users) -> None:
        account = await users.create()
        async with AgentApiClient(f"http://{server_url}") as api:
            await api.login(account.username, account.password)
            s = await api.create_session(permission_mode="bypassPermissions")
            frames: list[Frame] = []
            async with asyncio.timeout(90), api.open_stream(s["id"], after_seq=0) as stream:
                await stream.send_query("run: echo via-client")
                async for frame in stream:
                    frames.append(frame)
                    if turn_over(frames):
                        break
        assert frames[0]["type"] == "connected"
        types = [f["type"] for f in persisted(frames)]
        order = [types.index(t) for t in ("message_sent", "tool_call_started", "tool_call_completed", "result")]
        assert order == sorted(order), types
        completed = next(f for f in frames if f["type"] == "tool_call_completed")
        assert completed["data"]["name"] == "Bash" and "via-client" in str(completed["data"]["output"])
        seqs = [f["seq"] for f in persisted(frames)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert [(f["seq"], f["type"]) for f in persisted(frames)] == await log_of(app, s["id"])

    async def test_a_dropped_connection_is_resumed_with_after_seq(
        self, app: object, server_url: str, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        await sessions.wait_status(s["id"], "active")
        frames: list[Frame] = []
        api = RecordingClient(f"http://{server_url}", token=sessions.user.access_token)
        async with api, asyncio.timeout(90), api.open_stream(s["id"], after_seq=0) as stream:
            await stream.send_query("run: echo a\nrun: echo b\nsleep: 2")
            dropped = False
            async for frame in stream:
                frames.append(frame)
                if not dropped and frame["type"] == "tool_call_started":
                    bus = app_state(app).require_bus()
                    assert bus.subscriber_count(uuid.UUID(s["id"])) == 1
                    await bus.shut_down_subscribers()  # as a restart does: closed with 1012
                    dropped = True
                if turn_over(frames):
                    break
        hellos = [i for i, f in enumerate(frames) if f["type"] == "connected"]
        assert len(hellos) == 2 and stream.connections == 2, [f["type"] for f in frames]
        before = persisted(frames[: hellos[1]])
        assert api.connects == [{"after_seq": 0}, {"after_seq": before[-1]["seq"]}]
        assert "result" in [f["type"] for f in frames[hellos[1] :]], "the turn went on while the client reconnected"
        seqs = [f["seq"] for f in persisted(frames)]
        assert seqs == list(range(1, seqs[-1] + 1)), "every persisted event exactly once, in order"
        assert [(f["seq"], f["type"]) for f in persisted(frames)] == await log_of(app, s["id"])


class FlakyTickets(AgentApiClient):
    """Real stream tickets until `bad` is set, then one the server does not know."""

    bad = False

    async def stream_ticket(self, session_id: str) -> str:
        return "wst_not-a-real-ticket" if self.bad else await super().stream_ticket(session_id)


class TestRefusals:
    async def test_4401_raises_without_retrying_also_on_a_reconnect(
        self, app: object, server_url: str, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        async with FlakyTickets(f"http://{server_url}", token=sessions.user.access_token, reconnect_backoff_s=0) as api:
            api.bad = True
            stream = api.open_stream(s["id"])
            with pytest.raises(StreamClosed) as info:
                async with stream:
                    pass
            assert (info.value.close_code, info.value.status, info.value.code) == (4401, 401, "unauthenticated")
            assert stream.attempts == 1

            api.bad = False
            async with api.open_stream(s["id"]) as stream:
                assert (await anext(stream))["type"] == "connected"
                api.bad = True
                bus = app_state(app).require_bus()
                assert bus.subscriber_count(uuid.UUID(s["id"])) == 1
                await bus.shut_down_subscribers()
                with pytest.raises(StreamClosed) as info:
                    async for _ in stream:
                        pass
        assert info.value.close_code == 4401
        assert (stream.connections, stream.attempts) == (1, 2), "one reconnect attempt, refused, not retried"

    async def test_4404_raises(self, server_url: str, users: Users, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        other = await users.create()
        url = f"http://{server_url}"
        async with AgentApiClient(url, token=other.access_token, use_tickets=False, reconnect_backoff_s=0) as api:
            stream = api.open_stream(s["id"])
            with pytest.raises(StreamClosed) as info:
                async with stream:
                    pass
        assert (info.value.close_code, info.value.status, info.value.code) == (4404, 404, "session_not_found")
        assert stream.attempts == 1

        async with AgentApiClient(url, token=other.access_token) as api:  # with a ticket: refused before any socket
            with pytest.raises(ApiError) as refused:
                async for _ in api.stream(s["id"]):
                    pass
        assert (refused.value.status, refused.value.code) == (404, "session_not_found")
        assert not isinstance(refused.value, StreamClosed)


async def spawn_cli(*args: str) -> asyncio.subprocess.Process:
    """`agent-api ...` as a subprocess, without blocking the loop the in-process server runs on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_API_")}
    env |= {"PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
    pipe = asyncio.subprocess.PIPE
    exe = str(Path(sys.executable).parent / "agent-api")
    return await asyncio.create_subprocess_exec(exe, *args, stdin=pipe, stdout=pipe, stderr=pipe, env=env)


async def read_until(proc: asyncio.subprocess.Process, needle: str, seen: list[str], timeout: float = 60) -> None:
    """Read the CLI's output line by line until one contains `needle`."""
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, f"the CLI ended before printing {needle!r}: {''.join(seen)}"
            seen.append(line)
            if needle in line:
                return


async def run_cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await spawn_cli(*args)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return int(proc.returncode or 0), out.decode(), err.decode()


async def api_key(client: httpx.AsyncClient, sessions: SessionsApi) -> str:
    r = await client.post("/api/v1/auth/api-keys", json={"name": "chat-cli"}, headers=sessions.user.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.mark.slow
class TestChatCli:
    async def test_one_message_with_auto_approve(
        self, server_url: str, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        key = await api_key(client, sessions)
        url = f"http://{server_url}"
        code, out, err = await run_cli(
            "chat", s["id"], "--url", url, "--api-key", key, "-m", "run: echo from-cli", "--auto-approve"
        )
        assert code == 0, out + err
        assert "▶ Bash: echo from-cli" in out and "✓ Bash" in out, out
        assert "■ completed · $" in out and "status active" in out, out
        assert out.index("▶ Bash") < out.index("✓ Bash") < out.index("■ completed")
        assert (await sessions.get(s["id"]))["status"] == "active"

    async def test_permission_request_is_shown_and_denied(
        self, server_url: str, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        key = await api_key(client, sessions)
        url = f"http://{server_url}"
        code, out, err = await run_cli(
            "chat", s["id"], "--url", url, "--api-key", key, "-m", "write x.txt: 1", "--auto-deny"
        )
        assert code == 0, out + err
        assert "? Allow Write to " in out and "x.txt? [y/N]" in out, out
        assert "→ deny (by user)" in out and "✗ Write" in out, out
        decisions = await sessions.items(s["id"], "permissions")
        assert [(d["tool_name"], d["decision"], d["decided_by"]) for d in decisions] == [("Write", "deny", "user")]

    async def test_interactive_prompt_with_username_and_password_stdin(
        self, server_url: str, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        user = sessions.user
        proc = await spawn_cli(
            "chat", s["id"], "--url", f"http://{server_url}", "--username", user.username, "--password-stdin"
        )
        assert proc.stdin is not None and proc.stderr is not None
        seen: list[str] = []
        try:
            proc.stdin.write(f"{user.password}\nwrite typed.txt: typed\n".encode())
            await proc.stdin.drain()
            await read_until(proc, "? Allow Write to ", seen)  # stdin stays open: lines are read as they come
            proc.stdin.write(b"y\n")
            await proc.stdin.drain()
            await read_until(proc, "status active (turn completed)", seen)
            proc.stdin.write(b"second line\n")
            proc.stdin.close()
            await read_until(proc, "Echo: second line", seen)
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        rest = (await proc.stdout.read()).decode() if proc.stdout else ""
        out = "".join(seen) + rest
        assert code == 0, out + (await proc.stderr.read()).decode()
        assert "→ allow (by user)" in out and "✓ Write" in out and "status active (turn completed)" in rest, out
        decisions = await sessions.items(s["id"], "permissions")
        assert [(d["tool_name"], d["decision"], d["decided_by"]) for d in decisions] == [("Write", "allow", "user")]


class TestChatCliRefusals:
    async def test_bad_usage_and_bad_credentials(self, server_url: str, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        url = f"http://{server_url}"
        code, _, err = await run_cli("chat", s["id"], "--url", url, "--api-key", "k", "--auto-approve", "--auto-deny")
        assert code == 2 and "exclude each other" in err
        code, _, err = await run_cli("chat", s["id"], "--url", url, "--api-key", "aak_wrong", "-m", "hi")
        assert code == 1 and "401" in err, err
