"""The WebSocket `permission_response` frame with `remember: "session"`, and a bad one."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SessionsApi
from tests.streaming.conftest import Stream, connect

pytestmark = pytest.mark.slow


def is_request(frame: dict[str, Any]) -> bool:
    return frame["type"] == "permission_request"


class TestRememberOverTheStream:
    async def test_a_remembered_answer_decides_the_next_call_by_rule(
        self, server_url: str, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        await sessions.wait_status(s["id"], "active")
        async with await connect(server_url, s["id"], token=sessions.user.access_token) as ws:
            stream = Stream(ws)
            await stream.recv()
            await stream.send(type="query", message="write ws-one.txt: 1\nwrite ws-two.txt: 2")
            request = await stream.until(is_request)
            assert request["data"]["tool"] == "Write" and request["data"]["on_timeout"] == "deny"
            assert request["data"]["expires_at"]
            await stream.send(
                type="permission_response",
                request_id=request["data"]["request_id"],
                decision="allow",
                remember="session",
            )
            resolved = await stream.until(lambda f: f["type"] == "permission_resolved")
            assert resolved["data"]["remembered_rule"] == "Write"
            await stream.until(lambda f: f["type"] == "result")
        assert not [f for f in stream.frames if is_request(f) and f is not request], "the second write asked again"
        assert (await sessions.get(s["id"]))["allowed_tools"] == ["Write"]
        rows = [p for p in await sessions.items(s["id"], "permissions") if p["tool_name"] == "Write"]
        assert [(p["decision"], p["decided_by"]) for p in rows] == [("allow", "user"), ("allow", "rule")]

    async def test_another_remember_value_is_an_error_frame_and_changes_nothing(
        self, server_url: str, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        await sessions.wait_status(s["id"], "active")
        async with await connect(server_url, s["id"], token=sessions.user.access_token) as ws:
            stream = Stream(ws)
            await stream.recv()
            await stream.send(type="query", message="write ws-bad.txt: 1")
            request = await stream.until(is_request)
            request_id = request["data"]["request_id"]
            await stream.send(type="permission_response", request_id=request_id, decision="allow", remember="always")
            error = await stream.until(lambda f: f["type"] == "error")
            assert error["data"]["code"] == "validation_error" and "remember" in error["data"]["message"]
            rows = await sessions.items(s["id"], "permissions")
            assert [p["decision"] for p in rows] == [None], "the request must still be pending"
            await stream.send(type="permission_response", request_id=request_id, decision="deny")
            await stream.until(lambda f: f["type"] == "result")
        session = await sessions.get(s["id"])
        assert session["allowed_tools"] == [] and session["disallowed_tools"] == []
