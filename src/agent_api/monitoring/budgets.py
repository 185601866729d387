"""Monthly budgets: the status a user sees, the check before agent work starts, and the cap on a running turn.

Concurrency: a check counts what is already spent this month *and* the turns of the user still in flight (queued
or running), each reserved at the user's average turn cost this month (at least `budget_turn_reserve_usd`).
Checks of one user are serialized (PostgreSQL: `SELECT ... FOR UPDATE` on the user row; SQLite: every write
transaction is `BEGIN IMMEDIATE`), and the turn row is inserted in the same transaction, so the next check sees
it. Hence a new turn starts only while spent + reserved < limit, and when reservations cover real turn costs
the month ends at most one turn past the limit. Each running turn also gets `max_budget_usd` (what is left for
it), so the agent CLI stops a turn that runs far past it.

Call `ensure_within_budget` in a write transaction before flushing anything the refusal should undo.
"""

from __future__ import annotations

import calendar
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import audit
from agent_api.errors import BudgetExceeded
from agent_api.monitoring import repository as repo
from agent_api.runtime.agent import LiveAgent
from agent_api.state import AppState

log = logging.getLogger("agent_api.budgets")

# The agent CLI ignores a budget of 0; a turn admitted with nothing left stops after its first model call.
MIN_TURN_BUDGET_USD = 0.000001


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC calendar month holding `now`."""
    now = now.astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + timedelta(days=days)


def effective_limit(state: AppState, user_budget: float | None) -> float | None:
    return user_budget if user_budget is not None else state.settings.default_monthly_budget_usd


@dataclass(frozen=True)
class BudgetStatus:
    user_id: uuid.UUID
    monthly_budget_usd: float | None
    current_month_cost_usd: float
    remaining_budget_usd: float | None
    percent_used: float | None
    is_over_budget: bool
    days_remaining: int
    period_start: datetime
    period_end: datetime


async def budget_status(
    db: AsyncSession, state: AppState, user_id: uuid.UUID, user_budget: float | None
) -> BudgetStatus:
    now = state.clock()
    start, end = month_bounds(now)
    limit = effective_limit(state, user_budget)
    spent = await repo.spend_between(db, user_id, start, end)
    remaining = None if limit is None else max(0.0, limit - spent)
    if limit is None:
        percent = None
    elif limit > 0:
        percent = round(spent / limit * 100, 2)
    else:
        percent = 100.0
    return BudgetStatus(
        user_id=user_id,
        monthly_budget_usd=limit,
        current_month_cost_usd=round(spent, 6),
        remaining_budget_usd=None if remaining is None else round(remaining, 6),
        percent_used=percent,
        is_over_budget=limit is not None and spent >= limit,
        days_remaining=(end.date() - now.astimezone(UTC).date()).days,
        period_start=start,
        period_end=end,
    )


async def _headroom(
    db: AsyncSession, state: AppState, user_id: uuid.UUID, *, exclude_turn: uuid.UUID | None = None
) -> tuple[float | None, float, float]:
    """(limit, spent this month, reserved for turns in flight), with the user's row locked where that means anything."""
    user_budget = await repo.lock_user_budget(db, user_id)
    limit = effective_limit(state, user_budget)
    if limit is None:
        return None, 0.0, 0.0
    start, end = month_bounds(state.clock())
    spent, average = await repo.spend_and_average_turn(db, user_id, start, end)
    in_flight = await repo.turns_in_flight(db, user_id, exclude_turn)
    reserve = max(average, state.settings.budget_turn_reserve_usd)
    return limit, spent, in_flight * reserve


async def ensure_within_budget(db: AsyncSession, state: AppState, user_id: uuid.UUID) -> float | None:
    """Raise `BudgetExceeded` (402) when the month's budget is used up (turns in flight included); otherwise return
    the USD left after those turns (None: no budget applies)."""
    limit, spent, reserved = await _headroom(db, state, user_id)
    if limit is None:
        return None
    if spent >= limit or spent + reserved >= limit:
        state.metrics.budget_blocks.inc()
        details = {"monthly_budget_usd": limit, "current_month_cost_usd": round(spent, 6)}
        audit.record_later(state, "budget.blocked", actor_id=user_id, target_user_id=user_id, details=details)
        if spent >= limit:
            message = f"The monthly budget of ${limit:.2f} is spent (${spent:.4f} this month)"
        else:
            message = f"The rest of the monthly budget of ${limit:.2f} is taken by turns still running"
        raise BudgetExceeded(message, details={**details, "reserved_for_running_turns_usd": round(reserved, 6)})
    return limit - spent - reserved


async def turn_allowance(db: AsyncSession, state: AppState, user_id: uuid.UUID, turn_id: uuid.UUID) -> float | None:
    """What one starting turn may spend (its `max_budget_usd`): the budget left after the month's spend and the
    other turns in flight. None when no budget applies."""
    limit, spent, reserved = await _headroom(db, state, user_id, exclude_turn=turn_id)
    if limit is None:
        return None
    return max(MIN_TURN_BUDGET_USD, limit - spent - reserved)


async def levels_crossed(
    db: AsyncSession, state: AppState, user_id: uuid.UUID, cost_usd: float, user_budget: float | None
) -> list[tuple[str, dict[str, Any]]]:
    """The levels the turn just booked (`cost_usd`) took the month past: `budget_warning` at the warning level,
    `budget_exceeded` at the limit, each with its event data."""
    limit = effective_limit(state, user_budget)
    if limit is None or limit <= 0 or cost_usd <= 0:
        return []
    start, end = month_bounds(state.clock())
    after = await repo.spend_between(db, user_id, start, end)
    data = {
        "user_id": str(user_id),
        "monthly_budget_usd": limit,
        "current_month_cost_usd": round(after, 6),
        "remaining_budget_usd": round(max(0.0, limit - after), 6),
        "percent_used": round(after / limit * 100, 2),
        "warning_percent": state.settings.budget_warning_percent,
    }
    levels = (("budget_warning", limit * state.settings.budget_warning_percent / 100), ("budget_exceeded", limit))
    return [(kind, data) for kind, level in levels if after - cost_usd < level <= after]


# Restarting a client costs about half a second; a drift smaller than this is not worth one.
BUDGET_DRIFT_TOLERANCE_USD = 0.01


def agent_budget_fits(agent: LiveAgent, allowance: float | None, session_spent: float) -> bool:
    """Whether a live client's own budget (given at its start, counted from then) still matches `allowance`."""
    started_with = agent.spec.max_budget_usd
    if allowance is None or started_with is None:
        return allowance is None and started_with is None
    if agent.budget_baseline_usd is None:
        return False
    left = started_with - (session_spent - agent.budget_baseline_usd)
    return abs(left - allowance) <= BUDGET_DRIFT_TOLERANCE_USD
