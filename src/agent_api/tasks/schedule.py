"""Cron slots in a task's time zone, as UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
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
    """Slots from `first` (itself a slot) up to and including `now`, keeping only the newest few."""
    slots = [first]
    zone = ZoneInfo(timezone)
    itr = croniter(cron, first.astimezone(zone))
    while True:
        nxt: datetime = itr.get_next(datetime)
        if nxt.astimezone(UTC) > now:
            return slots
        slots.append(nxt.astimezone(UTC))
        if len(slots) > MAX_SKIPPED_RECORDED + 1:
            slots.pop(0)
