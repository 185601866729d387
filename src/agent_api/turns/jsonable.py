"""SDK values (dataclasses, dicts with odd leaves) turned into plain JSON for JSON columns and events."""

from __future__ import annotations

import json
from typing import Any


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
