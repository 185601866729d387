"""`{{variable}}` placeholders in a task's prompt: found, checked and filled in as plain text (never evaluated)."""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class MissingVariables(ValueError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def placeholders(template: str) -> list[str]:
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def render(template: str, values: Mapping[str, object]) -> str:
    missing = [name for name in placeholders(template) if name not in values]
    if missing:
        raise MissingVariables(missing)
    # One pass over the template: a value that itself looks like {{x}} stays as written.
    return PLACEHOLDER.sub(lambda m: _as_text(values[m.group(1)]), template)


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
