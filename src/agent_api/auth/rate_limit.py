"""Failed-login limiter: a sliding window of failures per username and per client address."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable


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
