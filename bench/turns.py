"""Turn latency: the server's REST `query` (wait: true) against direct claude-agent-sdk `query()` calls.

Both sides run one-tool-call turns (a Write) against the same offline model, in the same process, alternating
round by round so machine noise hits both alike. Reported: medians per case and the ratios server/direct.

    python bench/turns.py --rounds 7

(a) direct: a cold `query()` per turn (a new CLI process), and `query(resume=...)` for a follow-up.
(b) server: the first message of a fresh session, sent --think seconds after `POST /sessions` (a person typing it;
    the agent process starts in the background meanwhile) and, for comparison, sent at once; follow-ups on the live
    session; and a turn after the live client was evicted (so it resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query

from agent_api.app import create_app
from agent_api.config import Settings

PROMPT = "write note.txt: benchmark"


async def direct_turn(
    env: dict[str, str], cwd: Path, config_dir: Path, sandboxed: bool, resume: str | None = None
) -> tuple[float, str]:
    options = ClaudeAgentOptions(
        cwd=str(cwd),
        permission_mode="bypassPermissions",
        setting_sources=[],
        env={**env, "CLAUDE_CONFIG_DIR": str(config_dir)},
        resume=resume,
        # The same Bash sandbox as the server's agents (it costs each CLI start about 0.5 s), so like is timed with like.
        sandbox={"enabled": True, "autoAllowBashIfSandboxed": True} if sandboxed else None,
    )
    started = time.perf_counter()
    session_id = ""
    async for message in query(prompt=PROMPT, options=options):
        if isinstance(message, ResultMessage):
            session_id = message.session_id
    return time.perf_counter() - started, session_id


class Server:
    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str], app: Any) -> None:
        self.client, self.headers, self.app = client, headers, app

    async def new_session(self) -> str:
        r = await self.client.post(
            "/api/v1/sessions", json={"permission_mode": "bypassPermissions"}, headers=self.headers
        )
        return str(r.json()["id"])

    async def turn(self, sid: str) -> float:
        started = time.perf_counter()
        r = await self.client.post(
            f"/api/v1/sessions/{sid}/query", json={"message": PROMPT, "wait": True}, headers=self.headers, timeout=120
        )
        elapsed = time.perf_counter() - started
        if r.status_code != 200 or r.json()["turn_status"] != "completed":
            raise RuntimeError(f"turn failed: {r.text}")
        return elapsed

    async def evict(self, sid: str) -> None:
        import uuid

        await self.app.state.agent_api.require_agents().close(uuid.UUID(sid))


async def main(rounds: int, think_s: float) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-turns-"))
    settings = Settings(data_dir=data_dir, admin_username="bench", admin_password="bench-password", log_level="WARNING")
    app = create_app(settings)
    keys = ("a_cold", "a_resume", "b_first", "b_first_at_once", "b_follow", "b_resume")
    times: dict[str, list[float]] = {k: [] for k in keys}
    async with app.router.lifespan_context(app):
        state = app.state.agent_api
        env = state.endpoint.env
        sandboxed = state.bash_sandboxed
        print(f"Bash sandbox: {'on' if sandboxed else 'off'} (both sides)")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            login = await client.post("/api/v1/auth/login", json={"username": "bench", "password": "bench-password"})
            server = Server(client, {"Authorization": f"Bearer {login.json()['access_token']}"}, app)
            config_dir = data_dir / "direct-claude"
            config_dir.mkdir()
            # One warm-up of each path so first-time imports and disk caches do not count.
            warm_cwd = Path(tempfile.mkdtemp(dir=data_dir))
            await direct_turn(env, warm_cwd, config_dir, sandboxed)
            await server.turn(await server.new_session())
            for i in range(rounds):
                cwd = Path(tempfile.mkdtemp(dir=data_dir))
                t, sdk_session = await direct_turn(env, cwd, config_dir, sandboxed)
                times["a_cold"].append(t)
                sid = await server.new_session()
                await asyncio.sleep(think_s)
                times["b_first"].append(await server.turn(sid))
                times["b_first_at_once"].append(await server.turn(await server.new_session()))
                t, _ = await direct_turn(env, cwd, config_dir, sandboxed, resume=sdk_session)
                times["a_resume"].append(t)
                times["b_follow"].append(await server.turn(sid))
                await server.evict(sid)
                times["b_resume"].append(await server.turn(sid))
                print(f"round {i + 1}/{rounds}: " + ", ".join(f"{k}={v[-1]:.3f}s" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        (f"first message, {think_s:g} s after creating the session", "b_first", "a_cold", 0.5),
        ("first message, sent the moment the session is created", "b_first_at_once", "a_cold", 0.5),
        ("follow-up on a live session", "b_follow", "a_cold", 0.5),
        ("turn after idle eviction (resume)", "b_resume", "a_resume", 1.10),
    ]
    print("\n| case | server median | direct median | ratio | target |")
    print("|---|---|---|---|---|")
    for label, b, a, target in rows:
        ratio = med[b] / med[a]
        verdict = "met" if ratio <= target else "missed"
        direct = "cold `query()`" if a == "a_cold" else "`query(resume=)`"
        print(f"| {label} | {med[b]:.3f} s | {med[a]:.3f} s ({direct}) | {ratio:.2f} | <= {target} ({verdict}) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--think", type=float, default=1.0, help="seconds between creating a session and its first message"
    )
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.think))
