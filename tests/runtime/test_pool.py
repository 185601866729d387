"""The agent pool against the real CLI: background start, reuse, the live cap with LRU eviction, idle close."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent_api.runtime.agent import AgentSpec, HookRecord, RuntimeConfig
from agent_api.runtime.endpoint import base_env
from agent_api.runtime.offline_model import OfflineModel, cli_env
from agent_api.runtime.permissions import Verdict
from agent_api.runtime.pool import AgentPool
from tests.conftest import wait_until

pytestmark = pytest.mark.slow


class NullObserver:
    """Collects what a turn reports; denies anything that would need a person."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def on_message(self, message: Any) -> None:
        self.messages.append(message)

    async def on_hook(self, record: HookRecord) -> None:
        return None

    async def on_decision(
        self, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None, v: Verdict
    ) -> None:
        return None

    async def ask_permission(self, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None) -> Verdict:
        return Verdict("deny", "user", "no person in this test")

    async def current_rules(self) -> tuple[list[str], list[str]] | None:
        return None


@pytest.fixture(scope="module")
async def model() -> Any:
    async with OfflineModel() as offline:
        yield offline


def make_pool(model: OfflineModel, tmp: Path, **kwargs: Any) -> AgentPool:
    env = {**base_env(1), **cli_env(model.base_url)}  # reads the environment as it is now
    return AgentPool(RuntimeConfig(env=env, config_dir=tmp / "claude"), **kwargs)


def spec(tmp: Path) -> AgentSpec:
    cwd = tmp / uuid.uuid4().hex
    cwd.mkdir()
    return AgentSpec(session_id=uuid.uuid4(), cwd=cwd, permission_mode="bypassPermissions")


async def test_cap_evicts_the_least_recently_used_idle_agent(model: OfflineModel, tmp_path: Path) -> None:
    pool = make_pool(model, tmp_path, max_live=2, idle_timeout_s=300)
    try:
        a, b, c = spec(tmp_path), spec(tmp_path), spec(tmp_path)
        await pool.run_turn(a, "hello a", NullObserver())
        await pool.run_turn(b, "hello b", NullObserver())
        await pool.run_turn(a, "a again", NullObserver())  # b is now the least recently used
        result, _ = await pool.run_turn(c, "hello c", NullObserver())
        assert result is not None and result.result == "Echo: hello c"
        assert pool.is_live(a.session_id) and pool.is_live(c.session_id)
        assert not pool.is_live(b.session_id)
        assert len(pool) == 2
    finally:
        await pool.close_all()


async def test_a_user_over_their_cap_loses_their_own_idle_agent_not_anothers(
    model: OfflineModel, tmp_path: Path
) -> None:
    pool = make_pool(model, tmp_path, max_live=10, idle_timeout_s=300, max_live_per_user=2)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    try:
        a1, a2, a3, b1 = spec(tmp_path), spec(tmp_path), spec(tmp_path), spec(tmp_path)
        a1.owner = a2.owner = a3.owner = alice
        b1.owner = bob
        for s in (b1, a1, a2):
            async with pool.user_slot(s):
                await pool.run_turn(s, "hello", NullObserver())
        assert pool.user_slot_free(alice, a3.session_id)  # at the cap, but her agents are idle: one can go
        async with pool.user_slot(a3):
            await pool.run_turn(a3, "hello", NullObserver())
        assert [pool.is_live(s.session_id) for s in (a1, a2, a3, b1)] == [False, True, True, True]
    finally:
        await pool.close_all()


async def test_a_turn_beyond_the_cap_waits_for_one_of_the_users_turns(model: OfflineModel, tmp_path: Path) -> None:
    pool = make_pool(model, tmp_path, max_live=10, idle_timeout_s=300, max_live_per_user=1)
    alice = uuid.uuid4()
    try:
        first, second, other = spec(tmp_path), spec(tmp_path), spec(tmp_path)
        first.owner = second.owner = alice
        other.owner = uuid.uuid4()
        order: list[str] = []

        async def turn(s: AgentSpec, prompt: str, name: str) -> None:
            async with pool.user_slot(s):
                order.append(f"{name} starts")
                await pool.run_turn(s, prompt, NullObserver())
                order.append(f"{name} ends")

        long = asyncio.create_task(turn(first, "sleep: 3", "first"))
        await wait_until(lambda: _true(pool.is_busy(first.session_id)), timeout=60)
        assert not pool.user_slot_free(alice, second.session_id)
        assert pool.user_slot_free(other.owner, other.session_id)  # other users are not held up
        await turn(other, "hello", "other")
        assert order == ["first starts", "other starts", "other ends"]
        await asyncio.gather(long, turn(second, "hello", "second"))
        assert order[3:] == ["first ends", "second starts", "second ends"]
        assert not pool.is_live(first.session_id)  # closed to make room for the second
    finally:
        await pool.close_all()


async def test_waiting_turns_of_one_user_never_run_past_the_cap_together(model: OfflineModel, tmp_path: Path) -> None:
    """When one of the user's turns ends, every waiting turn of the user is woken: only one may take the slot."""
    pool = make_pool(model, tmp_path, max_live=10, idle_timeout_s=300, max_live_per_user=1)
    alice = uuid.uuid4()
    specs = [spec(tmp_path) for _ in range(4)]
    for s in specs:
        s.owner = alice
    running, most = 0, 0

    async def turn(s: AgentSpec, prompt: str) -> None:
        nonlocal running, most
        async with pool.user_slot(s):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0)  # a turn's first await (resolving its MCP servers, say) comes before its agent
            await pool.run_turn(s, prompt, NullObserver())
            running -= 1

    try:
        await asyncio.gather(turn(specs[0], "sleep: 1"), *(turn(s, "hello") for s in specs[1:]))
        assert most == 1
        assert sum(pool.is_live(s.session_id) for s in specs) == 1
    finally:
        await pool.close_all()


async def _true(value: bool) -> bool:
    return value


async def test_idle_agents_are_closed_and_the_next_turn_resumes(model: OfflineModel, tmp_path: Path) -> None:
    pool = make_pool(model, tmp_path, max_live=5, idle_timeout_s=0.0)
    try:
        s = spec(tmp_path)
        result, agent = await pool.run_turn(s, "the magic word is heron", NullObserver())
        assert result is not None
        assert await pool.close_idle() == 1
        assert not pool.is_live(s.session_id)
        s.resume = agent.sdk_session_id
        again, _ = await pool.run_turn(s, "recall", NullObserver())
        assert again is not None and "the magic word is heron" in (again.result or "")
    finally:
        await pool.close_all()


async def test_a_failed_start_is_reported_and_retried(model: OfflineModel, tmp_path: Path) -> None:
    from agent_api.runtime.agent import AgentStartError

    pool = make_pool(model, tmp_path)
    try:
        s = spec(tmp_path)
        s.resume = str(uuid.uuid4())  # no such conversation: the CLI refuses to start the turn
        with pytest.raises(AgentStartError):
            await pool.run_turn(s, "hello", NullObserver())
        s.resume = None
        result, _ = await pool.run_turn(s, "hello", NullObserver())
        assert result is not None and result.result == "Echo: hello"
    finally:
        await pool.close_all()


async def test_the_agent_never_sees_the_servers_secrets(
    model: OfflineModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK hands the CLI the server's whole environment; the server's own variables reach it blank."""
    secret = "s3cret-" + uuid.uuid4().hex
    monkeypatch.setenv("AGENT_API_SECRET_KEY", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("LC_TEST_MARKER", "kept")
    pool = make_pool(model, tmp_path)
    try:
        s = spec(tmp_path)
        result, _ = await pool.run_turn(s, "run: env > seen.txt", NullObserver())
        assert result is not None
        seen = (s.cwd / "seen.txt").read_text()
        assert "PATH=" in seen and "LC_TEST_MARKER=kept" in seen  # the command ran and printed its env
        assert secret not in seen
        assert "AGENT_API_SECRET_KEY=\n" in seen
    finally:
        await pool.close_all()
