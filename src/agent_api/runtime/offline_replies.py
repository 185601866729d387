"""What the offline model answers: a deterministic reading of directives in the last user prompt.

Directives, one per line of the prompt (``<system-reminder>`` blocks the CLI adds are ignored):

- ``run: CMD``           a ``Bash`` tool call
- ``run-unsandboxed: CMD``  a ``Bash`` call that asks the CLI to leave its sandbox (``dangerouslyDisableSandbox``)
- ``fetch URL``          a ``WebFetch`` tool call
- ``write PATH: TEXT``   a ``Write`` tool call (TEXT is the rest of the line; a relative PATH is made absolute
  against the working directory the CLI reports in its environment block)
- ``read PATH``          a ``Read`` tool call
- ``mcp SERVER TOOL {json}``  a call of MCP tool ``mcp__SERVER__TOOL`` with that JSON object as input
- ``tool NAME {json}``   a call of any tool NAME (``Edit``, ``Glob``, ``Grep``...) with that JSON object as input,
  passed as written (paths are not made absolute)
- ``sleep: N``           the text answer streams over N seconds, so a turn can be interrupted
- ``recall``             answers with the first user prompt of the conversation (checks resume)

Tool directives run one per model round trip, in order; once all have results the answer is
``Done. <result>``. A prompt without directives is answered ``Echo: <prompt>``. Token counts derive from
character counts, so the same conversation always costs the same.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

OFFLINE_MODEL_NAME = "offline-echo-1"

# A resumed conversation from another directory (a fork) reads "Primary working directory: NEW (was OLD)".
_CWD_RE = re.compile(r"Primary working directory: *(\S[^\n]*?)(?: \(was [^\n]*\))?[ \t]*$", re.MULTILINE)
_RUN_RE = re.compile(r"run:\s*(.+)", re.IGNORECASE)
_WRITE_RE = re.compile(r"write\s+(\S+?):\s?(.*)", re.IGNORECASE)
_READ_RE = re.compile(r"read\s+(\S+)", re.IGNORECASE)
_UNSANDBOXED_RE = re.compile(r"run-unsandboxed:\s*(.+)", re.IGNORECASE)
_FETCH_RE = re.compile(r"fetch\s+(\S+)", re.IGNORECASE)
_SLEEP_RE = re.compile(r"sleep:\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_MCP_RE = re.compile(r"mcp\s+([\w-]+)\s+([\w-]+)\s+(\{.*\})", re.IGNORECASE)
_TOOL_RE = re.compile(r"tool\s+([\w-]+)\s+(\{.*\})", re.IGNORECASE)
# Text the CLI itself puts into user messages; never a directive or part of the user's prompt.
_REMINDER_RE = re.compile(r"<system-reminder>.*?(</system-reminder>|$)", re.DOTALL)
_INTERRUPT_MARK = "[Request interrupted"


@dataclass
class Reply:
    """One assistant message: content blocks as the API returns them, plus pacing for ``sleep:``."""

    blocks: list[dict[str, Any]]
    stop_reason: str
    seconds: float = 0.0
    input_tokens: int = 1

    @property
    def output_tokens(self) -> int:
        return max(1, len(json.dumps(self.blocks)) // 4)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _prompt_text(content: Any) -> str:
    """What the user wrote in a message, without the reminders and markers the CLI mixes in."""
    texts = [_REMINDER_RE.sub("", b.get("text", "")).strip() for b in _blocks(content) if b.get("type") == "text"]
    # After an interrupt the CLI merges the abandoned prompt, a marker and the next prompt into one message:
    # only what follows the last marker is the new prompt.
    marks = [i for i, t in enumerate(texts) if t.startswith(_INTERRUPT_MARK)]
    if marks:
        texts = texts[marks[-1] + 1 :]
    return "\n".join(t for t in texts if t)


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in _blocks(content) if b.get("type") == "text")
    return content if isinstance(content, str) else ""


def _working_directory(body: dict[str, Any]) -> str | None:
    """The cwd the CLI reports in its environment block (trailing system-role message or system prompt)."""
    parts = [body.get("system"), *(m.get("content") for m in body.get("messages") or [] if isinstance(m, dict))]
    found = [m.group(1).strip() for p in parts for b in _blocks(p) for m in _CWD_RE.finditer(b.get("text") or "")]
    return found[-1] if found else None


def _absolute(path: str, cwd: str | None) -> str:
    # The CLI's file tools insist on absolute paths; without a reported cwd the path goes through as written.
    if path.startswith("/") or cwd is None:
        return path
    return f"{cwd.rstrip('/')}/{path.removeprefix('./')}"


def _tool_calls(prompt: str, cwd: str | None) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    for raw in prompt.splitlines():
        line = raw.strip()
        if m := _RUN_RE.fullmatch(line):
            command = m.group(1).strip()
            calls.append(("Bash", {"command": command, "description": f"Run {command[:60]}"}))
        elif m := _UNSANDBOXED_RE.fullmatch(line):
            command = m.group(1).strip()
            calls.append(("Bash", {"command": command, "description": "Run", "dangerouslyDisableSandbox": True}))
        elif m := _FETCH_RE.fullmatch(line):
            calls.append(("WebFetch", {"url": m.group(1), "prompt": "Summarise the page"}))
        elif m := _WRITE_RE.fullmatch(line):
            calls.append(("Write", {"file_path": _absolute(m.group(1), cwd), "content": m.group(2)}))
        elif m := _READ_RE.fullmatch(line):
            calls.append(("Read", {"file_path": _absolute(m.group(1), cwd)}))
        elif (m := _MCP_RE.fullmatch(line)) and isinstance(tool_input := _json_object(m.group(3)), dict):
            calls.append((f"mcp__{m.group(1)}__{m.group(2)}", tool_input))
        elif (m := _TOOL_RE.fullmatch(line)) and isinstance(tool_input := _json_object(m.group(2)), dict):
            calls.append((m.group(1), tool_input))
    return calls


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None  # not a directive after all: the line stays plain prompt text


def _fill_schema(schema: dict[str, Any], text: str) -> Any:
    """A minimal value that satisfies a JSON schema, with ``text`` for every string."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _fill_schema(v, text) for k, v in props.items() if isinstance(v, dict)}
    defaults = {"string": text, "integer": 0, "number": 0, "boolean": False, "array": []}
    return defaults.get(kind) if isinstance(kind, str) else None


def plan_reply(body: dict[str, Any]) -> Reply:
    """Decide the next assistant message for a Messages API request body."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    size = len(json.dumps(body.get("system"))) + len(json.dumps(messages))
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    prompts = [i for i in users if _prompt_text(messages[i].get("content"))]
    prompt_at = prompts[-1] if prompts else -1
    prompt = _prompt_text(messages[prompt_at].get("content")) if prompts else ""

    calls = _tool_calls(prompt, _working_directory(body))
    done = sum(
        1
        for m in messages[prompt_at + 1 :]
        if m.get("role") == "assistant"
        for b in _blocks(m.get("content"))
        if b.get("type") == "tool_use"
    )
    if done < len(calls):
        name, tool_input = calls[done]
        tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}
        return Reply([block], "tool_use", input_tokens=max(1, size // 4))

    last = messages[users[-1]] if users else {}
    results = [b for b in _blocks(last.get("content")) if b.get("type") == "tool_result"]
    lines = [line.strip() for line in prompt.splitlines()]
    sleep = next((float(m.group(1)) for line in lines if (m := _SLEEP_RE.fullmatch(line))), 0.0)
    if results and users[-1] != prompt_at:
        text = f"Done. {_result_text(results[-1])[:200]}".rstrip()
    elif any(line.lower() == "recall" for line in lines):
        text = f"Recall: {_prompt_text(messages[prompts[0]].get('content'))}"
    elif sleep:
        text = f"Slept for {sleep:g} seconds."
    else:
        text = f"Echo: {prompt}"
    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
    if isinstance(schema, dict):
        # Side requests such as session titles demand JSON; name it after the first line of the prompt.
        subject = next((ln for ln in lines if ln and not ln.startswith("<")), "offline session")
        text = json.dumps(_fill_schema(schema, subject[:60]))
    return Reply([{"type": "text", "text": text}], "end_turn", seconds=sleep, input_tokens=max(1, size // 4))
