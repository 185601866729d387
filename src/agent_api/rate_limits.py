"""Rate limits, kept per process: failed logins per username and client address, starting agent work (queries
and task executions) per user, and open event streams per user, each answering 429 with `Retry-After`."""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Literal, Protocol

from agent_api.config import Settings
from agent_api.errors import RateLimited
from agent_api.metrics import AppMetrics


class SlidingWindowLimiter:
    """Counts events per key in the last `window_s` seconds. In-process: each replica keeps its own."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def _prune(self, key: str, now: float) -> deque[float]:
        events = self._events[key]
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if not events:
            del self._events[key]
            return deque()
        return events

    def retry_after(self, key: str, limit: int) -> float:
        """Seconds until another event is allowed for `key`, or 0 when it is allowed now."""
        now = self.clock()
        events = self._prune(key, now)
        if len(events) < limit:
            return 0.0
        return events[len(events) - limit] + self.window_s - now

    def hit(self, key: str) -> None:
        now = self.clock()
        self._prune(key, now)
        self._events[key].append(now)

    def reset(self, key: str) -> None:
        self._events.pop(key, None)


class LoginLimiter:
    def __init__(self, per_user: int, per_ip: int, window_s: float, clock: Callable[[], float] = time.monotonic):
        self.per_user = per_user
        self.per_ip = per_ip
        self.window = SlidingWindowLimiter(window_s, clock)

    @staticmethod
    def _keys(username: str, client_ip: str) -> tuple[str, str]:
        return f"user:{username.strip().lower()}", f"ip:{client_ip}"

    def retry_after(self, username: str, client_ip: str) -> float:
        user_key, ip_key = self._keys(username, client_ip)
        return max(self.window.retry_after(user_key, self.per_user), self.window.retry_after(ip_key, self.per_ip))

    def failed(self, username: str, client_ip: str) -> None:
        for key in self._keys(username, client_ip):
            self.window.hit(key)

    def succeeded(self, username: str) -> None:
        self.window.reset(self._keys(username, "")[0])


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


class HasUserRates(Protocol):
    """What the check needs of the application state (typed here so this module imports no state)."""

    settings: Settings
    user_rates: UserRateLimiter
    metrics: AppMetrics


def limit_for(state: HasUserRates, action: Action) -> int:
    settings = state.settings
    return settings.rate_limit_query_per_minute if action == "query" else settings.rate_limit_execute_per_minute


def check_user_rate(state: HasUserRates, user_id: uuid.UUID, action: Action) -> None:
    """Count one `action` for the user, or raise `RateLimited` (429, `Retry-After`) when over the configured limit."""
    try:
        state.user_rates.check(user_id, action, limit_for(state, action))
    except RateLimited:
        state.metrics.rate_limited.labels(action).inc()
        raise


STREAM_RETRY_AFTER_S = 5


class StreamSlots:
    """Open event streams (WebSocket and SSE) per user. In-process: each replica counts its own connections."""

    def __init__(self) -> None:
        self._open: Counter[uuid.UUID] = Counter()

    def open_count(self, user_id: uuid.UUID) -> int:
        return self._open[user_id]

    def take(self, user_id: uuid.UUID, limit: int) -> Callable[[], None]:
        """Count one more open stream for the user and return its release (safe to call twice), or raise
        `RateLimited` when the user already holds `limit` (0: no limit)."""
        if limit > 0 and self._open[user_id] >= limit:
            raise RateLimited(
                STREAM_RETRY_AFTER_S, f"Too many open streams; at most {limit} per user. Close one and retry"
            )
        self._open[user_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open[user_id] -= 1
                if self._open[user_id] <= 0:
                    del self._open[user_id]

        return release
