"""`agent-api chat SESSION_ID`: watch a session live, send it messages, answer its permission requests."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import threading
from collections import deque
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.text import Text

from agent_api.client import AgentApiClient, ApiError, SessionStream

TURN_RUNNING = ("processing", "waiting")
FILE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit", "Read")
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def _target(tool_input: Any) -> str:
    if not isinstance(tool_input, dict):
        return ""
    for key in ("command", "file_path", "notebook_path", "path", "pattern", "url", "query"):
        if isinstance(tool_input.get(key), str):
            return str(tool_input[key])
    return json.dumps(tool_input)[:80]


def _preview(output: Any, limit: int = 120) -> str:
    if isinstance(output, list):
        output = " ".join(str(b.get("text", "")) for b in output if isinstance(b, dict))
    text = " ".join((output if isinstance(output, str) else json.dumps(output)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _question(request: dict[str, Any]) -> str:
    tool, target = str(request.get("tool")), _target(request.get("input"))
    return f"Allow {tool}{' to ' if tool in FILE_TOOLS else ': '}{target}? [y/N]"


class Chat:
    """Prints frames as they come and keeps what `-m` and the prompt need: status, turns, open questions."""

    def __init__(self, stream: SessionStream, *, auto: str | None, once: bool) -> None:
        self.stream, self.auto, self.once = stream, auto, once
        # Permission requests at or below `live_from` were listed in `connected` if still open.
        self.status, self.live_from = "unknown", 0
        self.questions: deque[str] = deque()  # request ids waiting for an answer typed at the prompt
        self.asked: set[str] = set()
        self.turn_id: str | None = None  # the turn `-m` started
        self.ended_turns: dict[str, bool] = {}  # turn id -> ended in error
        self.expecting = 0  # queries sent over the stream and not yet confirmed or refused
        self.eof = self.failed = False
        self.finished, self.changed = asyncio.Event(), asyncio.Condition()  # `changed`: after every frame

    def check_finished(self) -> None:
        idle = self.status not in TURN_RUNNING
        if self.once and self.turn_id in self.ended_turns and idle:
            self.failed = self.failed or self.ended_turns[self.turn_id]
            self.finished.set()
        elif not self.once and self.eof and idle and not self.expecting:
            self.finished.set()

    async def consume(self) -> None:
        async for frame in self.stream:
            await self.on_frame(frame)
            self.check_finished()
            async with self.changed:
                self.changed.notify_all()

    async def on_frame(self, frame: dict[str, Any]) -> None:
        kind, data = frame.get("type"), frame.get("data") or {}
        if kind == "connected":
            self.status, self.live_from = data.get("status", "unknown"), int(data.get("latest_seq") or 0)
            out.print(Text(f"connected · status {self.status} · seq {self.live_from}", style="dim"))
            for request in data.get("pending_permission_requests") or []:
                await self.ask(request)
        elif kind == "status_change":
            self.status = data.get("status", self.status)
            out.print(Text(f"· status {data.get('status')} ({data.get('reason') or ''})", style="dim"))
        elif kind == "message_sent":
            self.expecting = max(0, self.expecting - 1)
        elif kind == "message" and data.get("text"):
            mine = data.get("role") != "assistant"
            out.print(Text(f"> {data['text']}" if mine else str(data["text"]), style="dim" if mine else ""))
        elif kind == "tool_call_started":
            out.print(Text(f"▶ {data.get('name')}: {_target(data.get('input'))}", style="cyan"))
        elif kind == "tool_call_completed":
            mark, style = ("✗", "red") if data.get("is_error") else ("✓", "green")
            line = Text(f"{mark} {data.get('name')} ({data.get('duration_ms') or 0} ms) ", style=style)
            out.print(line.append(_preview(data.get("output", "")), style="dim"))
        elif kind == "permission_request":
            if int(frame.get("seq") or 0) > self.live_from:
                await self.ask(data)
            else:  # replayed: still open ones were listed in `connected` and asked there
                out.print(Text(f"? {_question(data).removesuffix(' [y/N]')}", style="yellow"))
        elif kind == "permission_resolved":
            request_id = str(data.get("request_id"))
            if request_id in self.questions:
                self.questions.remove(request_id)
            style = "green" if data.get("decision") == "allow" else "yellow"
            out.print(Text(f"→ {data.get('decision')} (by {data.get('decided_by')})", style=style))
        elif kind == "result":
            self.print_result(data)
        elif kind == "error":
            self.on_error(frame, data)
        elif kind == "interrupted":
            out.print(Text(f"· interrupt {'sent' if data.get('interrupted') else 'ignored: no turn running'}", "dim"))

    def print_result(self, data: dict[str, Any]) -> None:
        failed = bool(data.get("is_error")) or data.get("turn_status") not in (None, "completed")
        seconds = (data.get("duration_ms") or 0) / 1000
        line = f"■ {data.get('turn_status')} · ${float(data.get('cost_usd') or 0):.4f} · {data.get('num_turns') or 0} turns · {seconds:.1f} s"
        out.print(Text(line, style="red" if failed else "green"))
        if data.get("turn_id"):
            self.ended_turns[str(data["turn_id"])] = failed

    def on_error(self, frame: dict[str, Any], data: dict[str, Any]) -> None:
        out.print(Text(f"error [{data.get('code')}]: {data.get('message')}", style="bold red"))
        if "seq" not in frame:  # the server refused something this client sent
            self.expecting = max(0, self.expecting - 1)
        elif data.get("turn_id"):
            self.ended_turns[str(data["turn_id"])] = True

    async def ask(self, request: dict[str, Any]) -> None:
        request_id = str(request.get("request_id"))
        if request_id in self.asked:
            return
        self.asked.add(request_id)
        out.print(Text(f"? {_question(request)}", style="bold yellow"))
        if self.auto:
            out.print(Text(f"  {self.auto} (automatic)", style="dim"))
            await self.stream.send_permission_response(request_id, self.auto)
        else:
            self.questions.append(request_id)

    def ready_for(self) -> bool:  # a typed line answers an open question, or (no turn running) is a query
        return bool(self.questions) or (not self.once and self.status not in TURN_RUNNING and not self.expecting)

    async def read_input(self, lines: asyncio.Queue[str | None]) -> None:
        while True:
            line = await lines.get()
            if line is None:  # stdin closed: nobody is left to answer, so the answer is no
                self.eof, self.auto = True, "deny"
                while self.questions:
                    await self.stream.send_permission_response(self.questions.popleft(), "deny")
                self.check_finished()
                return
            line = line.strip()
            if line in ("/quit", "/exit"):
                self.finished.set()
            elif line == "/interrupt":
                async with self.changed:  # after the query it is meant for has reached the server
                    await self.changed.wait_for(lambda: not self.expecting)
                await self.stream.interrupt()
            elif line or self.questions:
                async with self.changed:  # a line typed during a turn waits for its question or the turn's end
                    await self.changed.wait_for(self.ready_for)
                if self.questions:
                    decision = "allow" if line.lower() in ("y", "yes") else "deny"
                    await self.stream.send_permission_response(self.questions.popleft(), decision)
                else:
                    self.expecting += 1
                    await self.stream.send_query(line)


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines into the loop from a daemon thread (a blocked read never holds up the exit)."""

    def run() -> None:
        for line in itertools.chain(iter(sys.stdin.readline, ""), [None]):  # lazily: line by line
            try:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            except RuntimeError:  # the loop is gone
                return

    threading.Thread(target=run, name="chat-stdin", daemon=True).start()


async def _run(
    api: AgentApiClient, login: tuple[str, str] | None, session_id: str, after_seq: int | None, message: str | None,
    auto: str | None,
) -> int:  # fmt: skip
    async with api:
        if login is not None:
            await api.login(*login)
        async with api.open_stream(session_id, after_seq=after_seq) as stream:
            chat = Chat(stream, auto=auto, once=message is not None)
            consume = asyncio.create_task(chat.consume())
            tasks = {consume, asyncio.create_task(chat.finished.wait())}
            if message is None or auto is None:
                lines: asyncio.Queue[str | None] = asyncio.Queue()
                _read_stdin(asyncio.get_running_loop(), lines)
                tasks.add(asyncio.create_task(chat.read_input(lines)))
            if message is None:
                out.print(Text("Type a message and press Enter (/interrupt, /quit; Ctrl-D ends).", style="dim"))
            try:
                if message is not None:
                    chat.turn_id = str((await api.query(session_id, message))["turn_id"])
                    chat.check_finished()
                pending = set(tasks)
                while pending and not chat.finished.is_set():
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # a failed stream or send raises here
                    if consume in done:  # the server ended the stream
                        chat.failed = chat.failed or chat.once
                        break
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            return 1 if chat.failed else 0


def chat(
    session_id: Annotated[str, typer.Argument(help="The session to chat with")],
    url: Annotated[str, typer.Option(envvar="AGENT_API_URL", help="Server URL")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="AGENT_API_KEY", help="API key")] = None,
    username: Annotated[str | None, typer.Option(help="Log in as this user (password: stdin or env)")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin")] = False,
    after_seq: Annotated[int | None, typer.Option(min=0, help="Replay events after this seq first")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Send it, show its turn, exit")] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Allow every permission request")] = False,
    auto_deny: Annotated[bool, typer.Option("--auto-deny", help="Deny every permission request")] = False,
) -> None:
    """Chat with a session: the live stream (tool calls, permission requests, results) and your messages."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else os.environ.get("AGENT_API_PASSWORD")
    problems = [
        (auto_approve and auto_deny, "--auto-approve and --auto-deny exclude each other"),
        (username is None and not api_key, "give --api-key (or AGENT_API_KEY), or --username with a password"),
        (username is not None and not password, "--username needs --password-stdin or AGENT_API_PASSWORD"),
        (message is not None and not message.strip(), "--message must not be empty"),
    ]
    problem = next((text for bad, text in problems if bad), None)
    if problem:
        err.print(Text(f"usage: {problem}", style="red"))
        raise typer.Exit(2)
    auto = "allow" if auto_approve else "deny" if auto_deny else None
    api = AgentApiClient(url, api_key=None if username else api_key)
    login = (username, password or "") if username else None
    try:
        code = asyncio.run(_run(api, login, session_id, after_seq, message, auto))
    except ApiError as exc:
        err.print(Text(f"error: {exc.message} ({exc.code}{f', {exc.status}' if exc.status else ''})", style="red"))
        code = 1
    except (httpx.TransportError, OSError) as exc:
        err.print(Text(f"error: cannot reach {url}: {exc}", style="red"))
        code = 1
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)
