"""Turn latency: `agent-api serve` over real HTTP against the same SDK driven directly, in one run.

    python bench/turns.py --rounds 7

Every turn is one Bash call (`run: echo benchmark`) and its answer, against the offline model, with the same Bash
sandbox and the same environment on both sides (when bubblewrap and socat are installed). The server runs as a subprocess (`agent-api serve`
on a fresh data dir, SQLite); the direct side runs in this process. Rounds alternate the two, so machine noise hits
both alike; the tables give medians.

Cases, each against its floor:
- follow-up on a live session (`POST /sessions/{id}/query`, `wait: true`) / the next `query()` of a live
  `ClaudeSDKClient` that stays connected between turns;
- first message sent --think seconds after `POST /sessions` (a person typing it) / a cold `query()` (a new CLI);
- first message sent the moment the session is created / a cold `query()`;
- a turn after the session was paused (its agent closed, so it resumes the conversation) / `query(resume=)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, query

from agent_api.runtime.agent import RuntimeConfig
from agent_api.runtime.confine import sandbox_settings
from agent_api.runtime.endpoint import base_env, sandbox_available
from agent_api.runtime.offline_model import OfflineModel, cli_env

PROMPT = "run: echo benchmark"
USER, PASSWORD = "bench", "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_process(data_dir: Path, extra_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`agent-api serve` on a fresh data dir (embedded defaults, the offline model), on a free loopback port."""
    port = free_port()
    env = {
        **os.environ,
        "AGENT_API_DATA_DIR": str(data_dir),
        "AGENT_API_ADMIN_USERNAME": USER,
        "AGENT_API_ADMIN_PASSWORD": PASSWORD,
        "AGENT_API_LOG_LEVEL": "WARNING",
        "AGENT_API_RATE_LIMIT_QUERY_PER_MINUTE": "0",
        **extra_env,
    }
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("ANTHROPIC_AUTH_TOKEN", None)
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).with_name("agent-api")), "serve", "--port", str(port)]
    with open(data_dir / "server.log", "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def wait_healthy(proc: subprocess.Popen[bytes], base: str, limit_s: float = 180.0) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient() as probe:
        while proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await probe.get(f"{base}/api/v1/monitoring/health")).status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {limit_s:g} s")
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server exited with {proc.returncode}")


class Server:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def login(self) -> None:
        r = await self.client.post("/api/v1/auth/login", json={"username": USER, "password": PASSWORD})
        r.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    async def new_session(self) -> str:
        r = await self.client.post("/api/v1/sessions", json={"permission_mode": "bypassPermissions"})
        r.raise_for_status()
        return str(r.json()["id"])

    async def turn(self, sid: str) -> float:
        started = time.perf_counter()
        r = await self.client.post(f"/api/v1/sessions/{sid}/query", json={"message": PROMPT, "wait": True})
        elapsed = time.perf_counter() - started
        if r.status_code != 200 or r.json()["turn_status"] != "completed":
            raise RuntimeError(f"turn failed: {r.status_code} {r.text}")
        return elapsed

    async def pause(self, sid: str) -> None:
        (await self.client.post(f"/api/v1/sessions/{sid}/pause")).raise_for_status()
        (await self.client.post(f"/api/v1/sessions/{sid}/resume")).raise_for_status()


class Direct:
    """The SDK on its own: the floor each server case is measured against."""

    def __init__(self, env: dict[str, str], root: Path, sandboxed: bool) -> None:
        self.root, self.sandboxed = root, sandboxed
        self.config_dir = root / "claude"
        self.config_dir.mkdir()
        # What the server gives each agent: a temporary directory and an empty home of its own (so Bash does not
        # source the account's shell profile, which would cost this side alone about 150 ms a call).
        tmp = root / "tmp"
        (tmp / "home").mkdir(parents=True)
        self.env = {
            **env,
            "CLAUDE_CONFIG_DIR": str(self.config_dir),
            "TMPDIR": str(tmp),
            "CLAUDE_CODE_TMPDIR": str(tmp),
            "HOME": str(tmp / "home"),
        }

    def options(self, resume: str | None = None) -> ClaudeAgentOptions:
        cwd = Path(tempfile.mkdtemp(dir=self.root))
        config = RuntimeConfig(env=self.env, config_dir=self.config_dir, bash_sandboxed=self.sandboxed)
        return ClaudeAgentOptions(
            cwd=str(cwd),
            permission_mode="bypassPermissions",
            setting_sources=[],
            env=self.env,
            resume=resume,
            sandbox=sandbox_settings(config, cwd),
            stderr=lambda _line: None,
        )

    async def cold(self, resume: str | None = None) -> tuple[float, str]:
        started = time.perf_counter()
        session_id = ""
        async for message in query(prompt=PROMPT, options=self.options(resume)):
            if isinstance(message, ResultMessage):
                session_id = message.session_id
        return time.perf_counter() - started, session_id

    @staticmethod
    async def live_turn(client: ClaudeSDKClient) -> float:
        started = time.perf_counter()
        await client.query(PROMPT)
        async for message in client.receive_response():
            if isinstance(message, ResultMessage) and message.is_error:
                raise RuntimeError(f"direct turn failed: {message.result}")
        return time.perf_counter() - started


CASES = [
    # (label, server key, direct key, floor label, target)
    ("follow-up on a live session", "follow", "live", "live `ClaudeSDKClient`", 1.25),
    ("first message, {think} s after `POST /sessions`", "first", "cold", "cold `query()`", 0.35),
    ("first message, sent the moment the session is created", "first_at_once", "cold", "cold `query()`", 0.6),
    ("turn after pause (the agent resumes the conversation)", "resumed", "resume", "`query(resume=)`", 1.0),
]


async def main(rounds: int, think_s: float, follow_ups: int, extra_env: dict[str, str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-turns-"))
    sandboxed = sandbox_available()
    print(f"Bash sandbox: {'on' if sandboxed else 'off'} (both sides); {os.cpu_count()} cores")
    times: dict[str, list[float]] = {k: [] for case in CASES for k in case[1:3]}
    with serve_process(root / "server", extra_env) as (proc, base):
        await wait_healthy(proc, base)
        await run_rounds(root, base, sandboxed, rounds, think_s, follow_ups, times)
    report(times, think_s)


async def run_rounds(
    root: Path, base: str, sandboxed: bool, rounds: int, think_s: float, follow_ups: int, times: dict[str, list[float]]
) -> None:
    async with OfflineModel() as model:
        direct = Direct({**base_env(2), **cli_env(model.base_url)}, root, sandboxed)
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            server = Server(http)
            await server.login()
            # One warm-up of each path so first-time imports and disk caches do not count.
            await direct.cold()
            await server.turn(await server.new_session())
            async with ClaudeSDKClient(direct.options()) as live:
                await Direct.live_turn(live)
                for i in range(rounds):
                    t, sdk_session = await direct.cold()
                    times["cold"].append(t)
                    sid = await server.new_session()
                    await asyncio.sleep(think_s)
                    times["first"].append(await server.turn(sid))
                    times["first_at_once"].append(await server.turn(await server.new_session()))
                    for _ in range(follow_ups):
                        times["live"].append(await Direct.live_turn(live))
                        times["follow"].append(await server.turn(sid))
                    times["resume"].append((await direct.cold(resume=sdk_session))[0])
                    await server.pause(sid)
                    times["resumed"].append(await server.turn(sid))
                    print(f"round {i + 1}/{rounds}: " + ", ".join(f"{k}={v[-1]:.3f}s" for k, v in times.items()))


def report(times: dict[str, list[float]], think_s: float) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n| case | server | direct | ratio | target |")
    print("|---|---|---|---|---|")
    for label, b, a, floor, target in CASES:
        ratio = med[b] / med[a]
        verdict = "met" if ratio <= target else "missed"
        print(
            f"| {label.format(think=f'{think_s:g}')} | {med[b]:.3f} s | {med[a]:.3f} s ({floor}) | {ratio:.2f} "
            f"| <= {target} ({verdict}) |"
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--follow-ups", type=int, default=3, help="follow-ups per round on each side")
    parser.add_argument("--think", type=float, default=1.0, help="seconds between creating a session and its message")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="a setting for the server"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = parse()
    settings = dict(item.split("=", 1) for item in args.server_env)
    asyncio.run(main(args.rounds, args.think, args.follow_ups, settings))
