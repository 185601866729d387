"""Per-user rate limits on starting agent work (queries and task executions): 429 with `Retry-After`."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from agent_api.auth.rate_limit import SlidingWindowLimiter
from agent_api.errors import RateLimited

if TYPE_CHECKING:
    from agent_api.state import AppState

Action = Literal["query", "execute"]
WINDOW_S = 60.0


class UserRateLimiter:
    """A one-minute sliding window per (user, action). In-process: each replica counts its own requests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = SlidingWindowLimiter(WINDOW_S, clock)

    def check(self, user_id: uuid.UUID, action: Action, per_minute: int) -> None:
        if per_minute <= 0:  # 0 switches the limit off
            return
        key = f"{action}:{user_id}"
        wait = self.window.retry_after(key, per_minute)
        if wait > 0:
            raise RateLimited(
                math.ceil(wait), f"Too many {action} requests; at most {per_minute} per minute are allowed"
            )
        self.window.hit(key)


def limit_for(state: AppState, action: Action) -> int:
    settings = state.settings
    return settings.rate_limit_query_per_minute if action == "query" else settings.rate_limit_execute_per_minute


def check_user_rate(state: AppState, user_id: uuid.UUID, action: Action) -> None:
    """Count one `action` for the user, or raise `RateLimited` (429, `Retry-After`) when over the configured limit."""
    try:
        state.user_rates.check(user_id, action, limit_for(state, action))
    except RateLimited:
        state.metrics.rate_limited.labels(action).inc()
        raise
