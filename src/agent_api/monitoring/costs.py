"""Cost reports from the per-turn rows: totals and a breakdown by day, session or model.

A turn belongs to the period in which it was created. Named periods are calendar periods in UTC holding "now"
(this hour, today, this ISO week from Monday, this month); an explicit range is `start` inclusive, `end` exclusive.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.errors import NotFound, ValidationFailed
from agent_api.models import User
from agent_api.monitoring import repository as repo
from agent_api.monitoring.budgets import month_bounds
from agent_api.monitoring.schemas import CostBucket, CostReport, GroupBy, Period

MAX_RANGE = timedelta(days=366 * 5)


def period_bounds(now: datetime, period: Period) -> tuple[datetime, datetime]:
    now = now.astimezone(UTC)
    if period == "monthly":
        return month_bounds(now)
    if period == "hourly":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day, day + timedelta(days=1)
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=7)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def resolve_range(
    now: datetime, period: Period | None, start: datetime | None, end: datetime | None
) -> tuple[Period | None, datetime, datetime]:
    if start is None and end is None:
        chosen: Period = period or "monthly"
        return (chosen, *period_bounds(now, chosen))
    if period is not None:
        raise ValidationFailed("Give either period or start/end, not both", code="invalid_range")
    if start is None:
        raise ValidationFailed("start is required with end", code="invalid_range")
    begin, finish = _utc(start), _utc(end) if end is not None else now.astimezone(UTC)
    if begin >= finish:
        raise ValidationFailed("start must be before end", code="invalid_range")
    if finish - begin > MAX_RANGE:
        raise ValidationFailed("The range may span at most five years", code="invalid_range")
    return None, begin, finish


async def readable_user(db: AsyncSession, caller: User, user_id: uuid.UUID) -> User:
    """Callers read their own figures; admins anyone's; anyone else gets the same 404 as for no such user."""
    if caller.id == user_id:
        return caller
    user = await repo.get_user(db, user_id) if caller.is_admin else None
    if user is None:
        raise NotFound("User not found", code="user_not_found")
    return user


def _bucket(key: str, values: tuple[Any, ...], label: str | None = None) -> CostBucket:
    cost, turns, input_tokens, output_tokens = values
    return CostBucket(
        key=key,
        label=label,
        cost_usd=round(float(cost or 0), 6),
        turns=int(turns or 0),
        input_tokens=int(input_tokens or 0),
        output_tokens=int(output_tokens or 0),
    )


def _model_shares(model_usage: dict[str, Any] | None) -> list[tuple[str, float]]:
    """Each model's share of a turn. The CLI's model usage runs cumulatively over the client's life, so only its
    proportions are used; the turn's own cost and tokens are what get split."""
    if not model_usage:
        return [("unknown", 1.0)]
    weights = {}
    for model, usage in model_usage.items():
        usage = usage if isinstance(usage, dict) else {}
        weights[str(model)] = float(usage.get("costUSD") or 0) or float(
            (usage.get("inputTokens") or 0) + (usage.get("outputTokens") or 0)
        )
    total = sum(weights.values())
    if total <= 0:
        return [(model, 1.0 / len(weights)) for model in weights]
    return [(model, weight / total) for model, weight in weights.items()]


def by_model(rows: list[tuple[Any, ...]]) -> list[CostBucket]:
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0, 0.0])
    for cost, input_tokens, output_tokens, model_usage in rows:
        for model, share in _model_shares(model_usage):
            entry = sums[model]
            entry[0] += float(cost or 0) * share
            entry[1] += 1  # turns that used the model (a turn with two models counts in both)
            entry[2] += (input_tokens or 0) * share
            entry[3] += (output_tokens or 0) * share
    buckets = [
        CostBucket(
            key=model,
            cost_usd=round(cost, 6),
            turns=round(turns),
            input_tokens=round(inp),
            output_tokens=round(out),
        )
        for model, (cost, turns, inp, out) in sums.items()
    ]
    return sorted(buckets, key=lambda b: (-b.cost_usd, b.key))


async def cost_report(
    db: AsyncSession,
    user_id: uuid.UUID,
    period: Period | None,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
) -> CostReport:
    totals = await repo.cost_totals(db, user_id, start, end)
    messages = await repo.message_count(db, user_id, start, end)
    if group_by == "day":
        breakdown = [
            _bucket(str(day)[:10], tuple(rest)) for day, *rest in await repo.cost_by_day(db, user_id, start, end)
        ]
    elif group_by == "session":
        breakdown = [
            _bucket(str(sid), tuple(rest), label=name)
            for sid, name, *rest in await repo.cost_by_session(db, user_id, start, end)
        ]
    else:
        breakdown = by_model(await repo.turns_with_model_usage(db, user_id, start, end))
    cost, sessions = totals["total_cost_usd"], totals["sessions"]
    return CostReport(
        user_id=user_id,
        period=period,
        start=start,
        end=end,
        group_by=group_by,
        total_cost_usd=round(cost, 6),
        total_sessions=sessions,
        total_messages=messages,
        total_tool_calls=totals["tool_calls"],
        total_turns=totals["turns"],
        total_input_tokens=totals["input_tokens"],
        total_output_tokens=totals["output_tokens"],
        total_tokens=totals["input_tokens"] + totals["output_tokens"],
        average_cost_per_session=round(cost / sessions, 6) if sessions else 0.0,
        breakdown=breakdown,
    )
