"""JSON a client sends, refused before parsing when it nests deeper than any request of ours needs.

Python's decoder recurses once per level: a body of a few hundred thousand ``[`` characters (well under the body
size limit) exhausts the stack, and every later consumer (validation, storage, `json.dumps`) recurses again.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64

# A string, or an unterminated one running to the end: a match never fails after a long scan, so the scan stays
# linear in the body's size whatever the body holds.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def nests_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    if body.count(b"[") + body.count(b"{") <= limit:  # cannot be deeper: skips the scan for nearly every body
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class TooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels is not accepted")


def loads(data: bytes | str) -> Any:
    """`json.loads` of UTF-8 JSON, raising `TooDeep` (a ValueError) for nesting past the limit instead of exhausting
    the stack. A raw NUL byte is refused: UTF-8 JSON never holds one, and UTF-16 or UTF-32 (which `json.loads`
    would guess) would hide brackets from the depth scan."""
    raw = data.encode() if isinstance(data, str) else data
    if b"\x00" in raw:
        raise ValueError("JSON must be UTF-8 and may not contain NUL bytes")
    if nests_too_deep(raw):
        raise TooDeep()
    try:
        return json.loads(raw)
    except RecursionError:
        raise TooDeep() from None
