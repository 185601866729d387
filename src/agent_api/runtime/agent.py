"""Live agents: one `ClaudeSDKClient` per session, kept open between turns, closed when idle, resumed on demand.

The SDK client must be connected, used and closed by one task, so each live agent owns a task that takes turns
from a queue. The pool keeps at most `max_live` of them and evicts the least recently used idle one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent_api.runtime import cli_state, confine, permissions
from agent_api.runtime.confine import cli_permission_mode, sandbox_settings
from agent_api.runtime.permissions import Verdict

if TYPE_CHECKING:
    # The SDK (and the `mcp` package it imports, ~11 MiB together) is imported where an agent first needs it, so a
    # server that has not started one yet does not hold it.
    from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage
    from claude_agent_sdk.types import PermissionResultAllow, PermissionResultDeny, ToolPermissionContext

    from agent_api.runtime.mcp_relay import McpRelay

log = logging.getLogger("agent_api.runtime")


@dataclass
class AgentSpec:
    """What a session asks of its agent; the runtime knows nothing else about sessions."""

    session_id: uuid.UUID
    cwd: Path
    system_prompt: str | None = None
    permission_mode: str = "default"
    allowed_tools: list[str] = field(default_factory=list)
    disallowed_tools: list[str] = field(default_factory=list)
    blocked_commands: list[str] = field(default_factory=list)
    model: str | None = None
    max_turns: int | None = None
    max_thinking_tokens: int | None = None
    fallback_model: str | None = None
    resume: str | None = None
    fork_session: bool = False
    resume_session_at: str | None = None
    max_budget_usd: float | None = None
    # SDK server configs by name (secrets decrypted), as `ClaudeAgentOptions.mcp_servers` takes them.
    mcp_servers: dict[str, Any] = field(default_factory=dict)
    # The user whose agent this is: the pool caps live agents per user.
    owner: uuid.UUID | None = None
    # The session whose CLI state directory holds the conversation `resume` names, when not this one (a fork's
    # parent): it is brought over before the CLI starts (`runtime.cli_state`).
    resume_from: uuid.UUID | None = None


def start_options(spec: AgentSpec, *, with_cwd: bool = True) -> tuple[Any, ...]:
    """What of a spec the CLI process takes at its start: two specs equal here can share one process (the rest is
    read by our hooks on each call)."""
    return (
        spec.cwd if with_cwd else None,
        spec.system_prompt,
        cli_permission_mode(spec.permission_mode),
        spec.model,
        spec.max_turns,
        spec.max_thinking_tokens,
        spec.fallback_model,
        spec.resume,
        spec.fork_session,
        spec.resume_session_at,
        spec.max_budget_usd,
        json.dumps(spec.mcp_servers, sort_keys=True, default=str),
    )


@dataclass(frozen=True)
class HookRecord:
    event: str
    tool_name: str | None
    tool_use_id: str | None
    outcome: str  # continue|block
    reason: str | None
    duration_ms: float


class TurnObserver(Protocol):
    """What a turn reports to, and asks of, whoever started it."""

    async def on_message(self, message: Any) -> None: ...

    async def on_hook(self, record: HookRecord) -> None: ...

    async def on_decision(
        self, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None, v: Verdict
    ) -> None:
        """A decision taken without asking anyone (mode, rule or path guard)."""

    async def ask_permission(self, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None) -> Verdict:
        """Ask a person; the observer records the request and the answer (or the timeout)."""
        ...

    async def current_rules(self) -> tuple[list[str], list[str]] | None:
        """The session's allow and deny rules as they are now (an answer may have added one since this process
        started); None: the ones the agent was started with."""
        ...


@dataclass(frozen=True)
class RuntimeConfig:
    env: dict[str, str]
    # The root of the CLI's state directories: each session's agents get their own below it (`runtime.cli_state`).
    config_dir: Path
    bash_sandboxed: bool = False
    stderr_lines: int = 50
    # Absolute paths sandboxed Bash may not read (the data dir: the secret key, the database, other sessions'
    # files and transcripts); the session's own working directory inside them stays readable.
    private_paths: tuple[str, ...] = ()
    # Where each agent process gets a temporary directory of its own (the CLI keeps background commands' output
    # there); None: the host's, shared by every session.
    tmp_root: Path | None = None
    # The loopback relay the HTTP/SSE MCP servers of `AgentSpec.mcp_servers` point at: each agent process holds
    # their relay tokens while it runs.
    mcp_relay: McpRelay | None = None

    def new_tmp_dir(self, session_id: uuid.UUID) -> Path | None:
        """A fresh directory name for one agent process of the session (a closing predecessor removes its own).
        Short: the sandbox's bridge sockets live in it, and a Unix socket's path is at most 107 bytes."""
        if self.tmp_root is None:
            return None
        return self.tmp_root / f"{session_id.hex[:12]}-{secrets.token_hex(3)}"


class AgentStartError(Exception):
    pass


_CLOSE = object()


class LiveAgent:
    def __init__(self, spec: AgentSpec, config: RuntimeConfig) -> None:
        self.spec = spec
        self.config = config
        self.sdk_session_id: str | None = spec.resume
        # What the session had spent when this process started: the CLI counts `max_budget_usd` from there.
        # Set by whoever applies budgets; None when unknown.
        self.budget_baseline_usd: float | None = None
        # The CLI's running cost total that this process's turns have been billed up to; None before its first
        # result (a resumed process may start from a total its predecessor saved: see `runtime.costs`).
        self.billed_total_usd: float | None = None
        self.last_used = time.monotonic()
        # This process's own temporary directory (see `RuntimeConfig.new_tmp_dir`).
        self.tmp = config.new_tmp_dir(spec.session_id)
        # The session's own CLI state directory: its conversations, and no other session's.
        self.state_dir = cli_state.state_dir(config.config_dir, spec.session_id)
        self.busy = False
        self.interrupted = False
        self._observer: TurnObserver | None = None
        self._client: ClaudeSDKClient | None = None
        self._commands: asyncio.Queue[Any] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._start_error: BaseException | None = None
        self._stderr: list[str] = []
        if config.mcp_relay is not None:
            config.mcp_relay.hold(spec.mcp_servers)
        self.task = asyncio.create_task(self._own_client(), name=f"agent-{spec.session_id}")

    # --- options -----------------------------------------------------------------------------------

    def _options(self) -> ClaudeAgentOptions:
        from claude_agent_sdk import ClaudeAgentOptions, HookMatcher  # on first use: see the imports

        spec = self.spec
        env = {**self.config.env, "CLAUDE_CONFIG_DIR": str(self.state_dir)}
        tmp = self.tmp
        if tmp is not None:
            # Not the host's shared /tmp/claude-<uid>: there one session's Bash could read another's output.
            tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
            # A home of its own, empty: the server account's shell profile is not the agent's to source. Bash
            # snapshots the profile when it starts, and everything the CLI started dies with it (its process
            # namespace): a profile that takes a lock (a version manager's rehash) would be killed holding it,
            # and every later shell on the host would wait for it.
            home = tmp / "home"
            home.mkdir(mode=0o700, exist_ok=True)
            env |= {"TMPDIR": str(tmp), "CLAUDE_CODE_TMPDIR": str(tmp), "HOME": str(home)}
        return ClaudeAgentOptions(
            cli_path=self._confined_cli(tmp),
            cwd=str(spec.cwd),
            system_prompt=spec.system_prompt,
            permission_mode=cli_permission_mode(spec.permission_mode),  # type: ignore[arg-type]
            model=spec.model,
            fallback_model=spec.fallback_model,
            max_turns=spec.max_turns,
            max_thinking_tokens=spec.max_thinking_tokens,
            max_budget_usd=spec.max_budget_usd,
            mcp_servers=self._mcp_config_file(),
            resume=spec.resume,
            fork_session=spec.fork_session,
            resume_session_at=spec.resume_session_at,
            setting_sources=[],
            env=env,
            can_use_tool=self._can_use_tool,
            hooks={
                "PreToolUse": [HookMatcher(matcher=None, hooks=[self._pre_tool_use], on_failure="block")],  # type: ignore[list-item]
                "PostToolUse": [HookMatcher(matcher=None, hooks=[self._hook_recorder("PostToolUse")])],
                "UserPromptSubmit": [HookMatcher(matcher=None, hooks=[self._hook_recorder("UserPromptSubmit")])],
                "Stop": [HookMatcher(matcher=None, hooks=[self._hook_recorder("Stop")])],
            },
            sandbox=sandbox_settings(self.config, spec.cwd, tmp),
            # Token deltas feed `?partial=1` stream subscribers; they are never stored.
            include_partial_messages=True,
            stderr=self._on_stderr,
        )

    def _confined_cli(self, tmp: Path | None) -> str | None:
        """With the sandbox on, the CLI process itself runs where the data dir is empty (`runtime.confine`)."""
        config = self.config
        if not config.bash_sandboxed or tmp is None:
            return None
        mounted = [Path(os.path.realpath(self.spec.cwd)), self.state_dir, tmp]
        return confine.write_wrapper(tmp, list(config.private_paths), mounted)

    @property
    def _mcp_file(self) -> Path:
        # In the process's own temporary directory when it has one: hidden from every other agent's namespace.
        if self.tmp is not None:
            return self.tmp / "mcp.json"
        return self.config.config_dir / f"mcp-{self.spec.session_id}.json"

    def _mcp_config_file(self) -> Path | dict[str, Any]:
        """MCP servers reach the CLI in a 0600 file: on its command line their secrets would be in `ps` output."""
        if not self.spec.mcp_servers:
            return {}
        self._mcp_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._mcp_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"mcpServers": self.spec.mcp_servers}, f)
        return self._mcp_file

    def _on_stderr(self, line: str) -> None:
        self._stderr.append(line)
        del self._stderr[: -self.config.stderr_lines]

    # --- permission and hook bridges ---------------------------------------------------------------

    async def _verdict(self, tool_name: str, tool_input: dict[str, Any]) -> Verdict | None:
        """A verdict when the sandbox, rules or the mode settle the call; None when a person has to decide."""
        spec = self.spec
        observer = self._observer
        # Read from the turn, not the spec: the process lives across turns, and a rule remembered from a person's
        # answer applies to the very next call.
        rules = await observer.current_rules() if observer is not None else None
        allowed, disallowed = rules if rules is not None else (spec.allowed_tools, spec.disallowed_tools)
        escape = permissions.leaves_sandbox(tool_name, tool_input, self.config.bash_sandboxed)
        if escape:
            return escape
        blocked = permissions.blocked_command(spec.blocked_commands, tool_name, tool_input)
        if blocked:
            return Verdict("deny", "rule", f"command matches blocked pattern {blocked!r}")
        unreachable = await permissions.network_guard(tool_name, tool_input)
        if unreachable:
            return unreachable
        return permissions.decide(
            cwd=spec.cwd,
            mode=spec.permission_mode,
            allowed=allowed,
            disallowed=disallowed,
            tool_name=tool_name,
            tool_input=tool_input,
            bash_sandboxed=self.config.bash_sandboxed,
        )

    async def _pre_tool_use(self, data: dict[str, Any], tool_use_id: str | None, _ctx: Any) -> dict[str, Any]:
        started = time.perf_counter()
        tool_name = str(data.get("tool_name", ""))
        tool_input = data.get("tool_input") or {}
        verdict = await self._verdict(tool_name, tool_input)
        observer = self._observer
        if verdict is not None and observer is not None:
            await observer.on_decision(tool_name, tool_input, tool_use_id, verdict)
        outcome = "block" if verdict is not None and verdict.decision == "deny" else "continue"
        if observer is not None:
            reason = verdict.reason if verdict else "asks for permission"
            duration = (time.perf_counter() - started) * 1000
            await observer.on_hook(HookRecord("PreToolUse", tool_name, tool_use_id, outcome, reason, duration))
        if verdict is None:
            # Nothing settles it here: the CLI asks `can_use_tool`, which asks a person.
            return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "ask"}}
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": verdict.decision,
                "permissionDecisionReason": verdict.reason,
            }
        }

    def _hook_recorder(self, event: str) -> Any:
        async def record(data: dict[str, Any], tool_use_id: str | None, _ctx: Any) -> dict[str, Any]:
            started = time.perf_counter()
            observer = self._observer
            if observer is not None:
                tool = data.get("tool_name")
                duration = (time.perf_counter() - started) * 1000
                await observer.on_hook(HookRecord(event, tool, tool_use_id, "continue", None, duration))
            return {}

        return record

    async def _can_use_tool(
        self, tool_name: str, tool_input: dict[str, Any], context: ToolPermissionContext
    ) -> PermissionResultAllow | PermissionResultDeny:
        """What the CLI asks when our hook said "ask", and what its sandbox network proxy asks about a new host
        (which no hook sees): the same verdict first, so no person can approve what the sandbox refuses."""
        from claude_agent_sdk.types import PermissionResultAllow, PermissionResultDeny  # on first use: see the imports

        observer = self._observer
        tool_use_id = getattr(context, "tool_use_id", None)
        if observer is None:
            return PermissionResultDeny(message="no turn is listening for permission requests")
        verdict = await self._verdict(tool_name, tool_input)
        if verdict is not None:
            await observer.on_decision(tool_name, tool_input, tool_use_id, verdict)
        else:
            verdict = await observer.ask_permission(tool_name, tool_input, tool_use_id)
        if verdict.decision == "allow":
            return PermissionResultAllow()
        return PermissionResultDeny(message=verdict.reason or "denied")

    # --- the owning task ---------------------------------------------------------------------------

    async def _own_client(self) -> None:
        try:
            await self._serve()
        finally:
            if self.config.mcp_relay is not None:
                await self.config.mcp_relay.release(self.spec.mcp_servers)
            if self.tmp is not None:  # also after a failed start
                await asyncio.to_thread(shutil.rmtree, self.tmp, True)

    async def _serve(self) -> None:
        from claude_agent_sdk import ClaudeSDKClient  # on first use: see the imports

        try:
            spec = self.spec
            root = self.config.config_dir
            await asyncio.to_thread(cli_state.prepare, root, spec.session_id, spec.resume, spec.resume_from)
            client = ClaudeSDKClient(self._options())
            await client.connect()
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._mcp_file.unlink(missing_ok=True)  # the CLI read it at start-up
        self._client = client
        self._ready.set()
        try:
            while True:
                command = await self._commands.get()
                if command is _CLOSE:
                    return
                prompt, observer, done = command
                await self._run_turn(client, prompt, observer, done)
        finally:
            self._client = None
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def _run_turn(
        self, client: ClaudeSDKClient, prompt: str, observer: TurnObserver, done: asyncio.Future[Any]
    ) -> None:
        from claude_agent_sdk import ResultMessage, SystemMessage  # on first use: see the imports

        self._observer = observer
        result: ResultMessage | None = None
        try:
            if self.interrupted:  # interrupted before the prompt was sent
                done.set_result(None)
                return
            await client.query(prompt)
            async for message in client.receive_response():
                if isinstance(message, SystemMessage) and message.subtype == "init":
                    self.sdk_session_id = message.data.get("session_id") or self.sdk_session_id
                if isinstance(message, ResultMessage):
                    result = message
                    self.sdk_session_id = message.session_id or self.sdk_session_id
                await observer.on_message(message)
            if not done.done():
                done.set_result(result)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            raise
        finally:
            self._observer = None
            self.last_used = time.monotonic()

    async def wait_ready(self) -> None:
        await self._ready.wait()
        if self._start_error is not None:
            detail = "; ".join(self._stderr[-5:])
            raise AgentStartError(
                f"agent process failed to start: {self._start_error}{' | ' + detail if detail else ''}"
            )

    @property
    def alive(self) -> bool:
        return not self.task.done() and not self._process_exited()

    def _process_exited(self) -> bool:
        """The CLI process died while the agent sat idle (killed, out of memory): the SDK only finds out when the
        next turn is sent. Read from the SDK's transport, defensively, since it is not public API."""
        transport = getattr(self._client, "_transport", None)
        process = getattr(transport, "_process", None)
        return process is not None and getattr(process, "returncode", None) is not None

    async def run(self, prompt: str, observer: TurnObserver) -> ResultMessage | None:
        # Busy from the start, so an interrupt that comes while the process is still starting is not lost.
        self.busy, self.interrupted = True, False
        self.last_used = time.monotonic()
        done: asyncio.Future[ResultMessage | None] = asyncio.get_running_loop().create_future()
        try:
            await self.wait_ready()
            if not self.alive:
                raise AgentStartError("agent process has exited")
            if self.interrupted:
                return None
            await self._commands.put((prompt, observer, done))
            waiter = asyncio.ensure_future(done)
            owner: asyncio.Future[Any] = self.task
            finished, _ = await asyncio.wait({waiter, owner}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in finished:
                return waiter.result()
            waiter.cancel()
            if self.interrupted:
                return None  # closed on purpose mid-turn (pause, delete): an interrupted turn, not a failure
            raise AgentStartError("agent process exited during the turn")
        finally:
            self.busy = False
            self.last_used = time.monotonic()

    async def interrupt(self) -> None:
        if not self.busy:
            return
        self.interrupted = True
        client = self._client
        if client is not None and self._observer is not None:
            with contextlib.suppress(Exception):
                await client.interrupt()

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        if self.task.done():
            return
        if self.busy and not self.interrupted:
            await self.interrupt()
        await self._commands.put(_CLOSE)
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except (TimeoutError, Exception):
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
