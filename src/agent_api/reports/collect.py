"""Turning a session's rows and working directory into the parts of a report, each cut to a readable size."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_api.models import Message, ToolCall, Turn
from agent_api.reports.schemas import (
    FileEntry,
    ReportStatus,
    Timeline,
    TimelineEntry,
    TimelineMessage,
    TimelineToolCall,
    WorkdirFiles,
)
from agent_api.runtime import workdir

# The first and the last TIMELINE_HALF entries are kept: how the work began and how it ended.
TIMELINE_HALF = 100
MESSAGE_CHARS = 4_000
TOOL_IO_CHARS = 1_500
LONG_TEXT_CHARS = 20_000  # prompt and final answer
MAX_ERRORS = 50
ERROR_CHARS = 2_000
MAX_FILES_LISTED = 500
# Counting stops here too, so a directory of a million small files cannot make a report slow.
MAX_FILES_SCANNED = 50_000

_TURN_STATUS: dict[str, ReportStatus] = {
    "completed": "completed",
    "failed": "failed",
    "interrupted": "interrupted",
    "queued": "running",
    "running": "running",
}


def clip(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to at most `limit` characters, the cut marked; and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[: limit - 2] + " …", True


def output_text(output: Any) -> str | None:
    """A tool's output as a person reads it: plain text, the text blocks joined, or stdout and stderr."""
    if output is None or isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(b, dict) and isinstance(b.get("text"), str) for b in output):
        return "\n".join(b["text"] for b in output)
    if isinstance(output, dict) and ("stdout" in output or "stderr" in output):
        parts = [str(output.get("stdout") or ""), str(output.get("stderr") or "")]
        return "\n".join(p for p in parts if p)
    return json.dumps(output, ensure_ascii=False, sort_keys=True, default=str)


def _message_entry(m: Message) -> TimelineMessage:
    text, truncated = clip(m.text or "", MESSAGE_CHARS)
    return TimelineMessage(at=m.created_at, role=m.role, text=text, truncated=truncated)


def _tool_entry(c: ToolCall) -> TimelineToolCall:
    given, input_cut = clip(json.dumps(c.input, ensure_ascii=False, sort_keys=True, default=str), TOOL_IO_CHARS)
    out, output_cut = None, False
    if (full := output_text(c.output)) is not None:
        out, output_cut = clip(full, TOOL_IO_CHARS)
    return TimelineToolCall(
        at=c.started_at,
        finished_at=c.finished_at,
        name=c.name,
        tool_use_id=c.tool_use_id,
        status=c.status,
        is_error=c.is_error,
        duration_ms=c.duration_ms,
        input=given,
        output=out,
        truncated=input_cut or output_cut,
    )


def timeline(messages: Sequence[Message], calls: Sequence[ToolCall], total: int) -> Timeline:
    """Messages and tool calls in time order; `messages` and `calls` must hold each kind's first and last ones."""
    entries: list[TimelineEntry] = [_message_entry(m) for m in messages]
    entries += [_tool_entry(c) for c in calls]
    # A stable sort keeps an assistant message ahead of the tool calls it asked for when their times tie.
    entries.sort(key=lambda e: e.at)
    if total > 2 * TIMELINE_HALF:
        entries = entries[:TIMELINE_HALF] + entries[-TIMELINE_HALF:]
    return Timeline(entries=entries, total=total, omitted=total - len(entries))


def outcome(turns: Sequence[Turn], error: str | None) -> ReportStatus:
    if error:
        return "failed"
    if not turns:
        return "empty"
    last = turns[-1]
    if last.status == "completed" and last.is_error:
        return "failed"
    return _TURN_STATUS.get(last.status, "failed")


def final_answer(turns: Sequence[Turn]) -> str | None:
    for turn in reversed(turns):
        if turn.result:
            return clip(turn.result, LONG_TEXT_CHARS)[0]
    return None


def errors(turns: Sequence[Turn], session_error: str | None, error: str | None) -> list[str]:
    found: list[str] = [e for e in (error, session_error) if e]
    for number, turn in enumerate(turns, start=1):
        found += [f"turn {number}: {e}" for e in turn.errors or [] if e]
        if turn.is_error and turn.result:
            found.append(f"turn {number}: {turn.result}")
    unique = list(dict.fromkeys(clip(e, ERROR_CHARS)[0] for e in found))
    return unique[:MAX_ERRORS]


def total_duration_ms(turns: Sequence[Turn]) -> int | None:
    durations = [t.duration_ms for t in turns if t.duration_ms is not None]
    return sum(durations) if durations else None


def list_files(root: Path, since: datetime | None) -> WorkdirFiles:
    """Files and links under root (links are listed, never followed), in path order; blocking, run it in a thread."""
    if root.is_symlink() or not root.is_dir():
        return WorkdirFiles(available=False, items=[], total_count=0, total_bytes=0, truncated=False)
    items: list[FileEntry] = []
    count = total_bytes = 0
    truncated = False
    threshold = since.timestamp() if since is not None else None
    # The workdir walker lstat()s every entry relative to its parent's descriptor and never descends into a link.
    # Leaving the loop early drops the generator at once, which closes the directory descriptors it holds.
    for entry in workdir.walk(root):
        if entry.kind == "dir":
            continue
        if count >= MAX_FILES_SCANNED:
            truncated = True
            break
        size = entry.st.st_size if entry.kind == "file" else 0
        count, total_bytes = count + 1, total_bytes + size
        if len(items) >= MAX_FILES_LISTED:
            truncated = True
            continue
        items.append(
            FileEntry(
                path=entry.arcname,
                kind=entry.kind,
                size_bytes=size,
                modified_at=datetime.fromtimestamp(entry.st.st_mtime, UTC),
                changed=threshold is not None and entry.st.st_mtime >= threshold,
            )
        )
    return WorkdirFiles(available=True, items=items, total_count=count, total_bytes=total_bytes, truncated=truncated)
