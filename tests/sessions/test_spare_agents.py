"""Spare agents (`AGENT_API_SPARE_AGENTS`), through the real SDK and CLI: a new session with default options takes a
process started ahead, and from then on its agent follows the session's own settings; each agent process has a home
of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from agent_api.app import agent_tmp_root, create_app
from agent_api.runtime.pool import AgentPool
from tests.conftest import SessionsApi, app_state, make_settings, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    # Without the sandbox, Bash asks in `default` mode: what shows whose rules the adopted agent follows.
    settings = make_settings(tmp_path_factory.mktemp("data"), database_url, spare_agents=1, sandbox="off")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def pool_of(app: object) -> AgentPool:
    return app_state(app).require_agents()


async def ready_spare(app: object, other_than: uuid.UUID | None = None) -> uuid.UUID:
    """The id of the spare agent once one is running (and not `other_than`)."""
    pool = pool_of(app)

    async def check() -> uuid.UUID | None:
        for agent in pool._spares:
            if agent.alive and agent.spec.session_id != other_than:
                await agent.wait_ready()
                return agent.spec.session_id
        return None

    return await wait_until(check, timeout=60)


async def bash_output(sessions: SessionsApi, session_id: str, command: str) -> str:
    r = await sessions.query(session_id, f"run: {command}")
    assert r.status_code == 200 and r.json()["turn_status"] == "completed", r.text
    output = (await sessions.items(session_id, "tool-calls"))[-1]["output"]
    return str(output["stdout"] if isinstance(output, dict) else output)


async def test_a_new_session_takes_the_spare_and_another_starts(app: object, sessions: SessionsApi) -> None:
    spare = await ready_spare(app)
    s = await sessions.create(permission_mode="bypassPermissions")
    assert s["id"] == str(spare)
    assert pool_of(app).is_live(spare)
    # The spare was running before the session existed: the session is usable at once.
    r = await sessions.query(s["id"], "hello")
    assert r.status_code == 200 and r.json()["result"] == "Echo: hello", r.text
    replacement = await ready_spare(app, other_than=spare)
    assert replacement != spare
    assert pool_of(app).spare_count == 1


async def test_the_adopted_agent_asks_as_the_sessions_own_mode_says(app: object, sessions: SessionsApi) -> None:
    spare = await ready_spare(app)
    s = await sessions.create(permission_mode="default", blocked_commands=["rm *"])
    assert s["id"] == str(spare)
    r = await sessions.query(s["id"], "run: rm -rf nothing-here")
    assert r.status_code == 200, r.text
    decided = [(p["tool_name"], p["decision"], p["decided_by"]) for p in await sessions.items(s["id"], "permissions")]
    assert decided == [("Bash", "deny", "rule")], decided


async def test_a_session_with_other_start_options_starts_its_own(app: object, sessions: SessionsApi) -> None:
    spare = await ready_spare(app)
    s = await sessions.create(system_prompt="You are terse.", permission_mode="bypassPermissions")
    assert s["id"] != str(spare)
    assert any(a.spec.session_id == spare for a in pool_of(app)._spares)
    r = await sessions.query(s["id"], "hi")
    assert r.status_code == 200 and r.json()["turn_status"] == "completed", r.text


async def test_each_agent_has_an_empty_home_of_its_own(app: object, sessions: SessionsApi) -> None:
    settings = app_state(app).settings
    a = await sessions.create(permission_mode="bypassPermissions")
    b = await sessions.create(permission_mode="bypassPermissions")
    home_a = (await bash_output(sessions, a["id"], "echo HOME=$HOME")).strip()
    assert home_a.startswith(f"HOME={agent_tmp_root(settings)}/"), home_a
    # What one session leaves in its home is not another's: no shell profile planted for the next agent.
    await bash_output(sessions, a["id"], "echo 'echo PLANTED' > ~/.bashrc && ls -A ~")
    out_b = await bash_output(sessions, b["id"], "echo HOME=$HOME; ls -A ~; echo end")
    assert "PLANTED" not in out_b and ".bashrc" not in out_b, out_b
    assert home_a.split("=", 1)[1] not in out_b
