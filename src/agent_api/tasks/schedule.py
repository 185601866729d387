"""Cron slots in a task's time zone, as UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

# After downtime, the newest missed slot runs once; older ones are recorded as skipped, at most this many.
MAX_SKIPPED_RECORDED = 100


def next_slot(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot strictly after `after`."""
    local = after.astimezone(ZoneInfo(timezone))
    nxt: datetime = croniter(cron, local).get_next(datetime)
    return nxt.astimezone(UTC)


def due_slots(cron: str, timezone: str, first: datetime, now: datetime) -> list[datetime]:
    """Slots from `first` (itself a slot) up to and including `now`; after a long downtime only the newest
    MAX_SKIPPED_RECORDED + 1, found walking back from `now`, so the work does not grow with the downtime."""
    zone = ZoneInfo(timezone)
    newest_first: list[datetime] = []
    itr = croniter(cron, now.astimezone(zone) + timedelta(microseconds=1))  # get_prev may return `now` itself
    while len(newest_first) <= MAX_SKIPPED_RECORDED:
        slot = itr.get_prev(datetime).astimezone(UTC)
        if slot < first:
            break
        newest_first.append(slot)
    return list(reversed(newest_first)) or [first]
