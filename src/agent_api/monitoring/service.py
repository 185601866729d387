"""Budget status for the API, and a session's metrics with latency percentiles."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.errors import NotFound
from agent_api.models import Session, User
from agent_api.monitoring import budgets
from agent_api.monitoring import repository as repo
from agent_api.monitoring.schemas import BudgetRead, CurrentMetrics, LatencyStats, SessionMetrics
from agent_api.state import AppState


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def latency_stats(values: list[float]) -> LatencyStats:
    if not values:
        return LatencyStats(count=0, p50_ms=None, p90_ms=None, p95_ms=None, p99_ms=None, max_ms=None, mean_ms=None)
    ordered = sorted(values)
    return LatencyStats(
        count=len(ordered),
        p50_ms=round(percentile(ordered, 0.50), 2),
        p90_ms=round(percentile(ordered, 0.90), 2),
        p95_ms=round(percentile(ordered, 0.95), 2),
        p99_ms=round(percentile(ordered, 0.99), 2),
        max_ms=round(ordered[-1], 2),
        mean_ms=round(sum(ordered) / len(ordered), 2),
    )


async def budget_of(db: AsyncSession, state: AppState, user: User) -> BudgetRead:
    status = await budgets.budget_status(db, state, user.id, user.monthly_budget_usd)
    return BudgetRead(**{name: getattr(status, name) for name in BudgetRead.model_fields})


async def tool_counts(
    db: AsyncSession, session_id: uuid.UUID, turn_id: uuid.UUID | None = None
) -> tuple[dict[str, int], int]:
    """Tool calls by tool name, and how many failed; for the session or one of its turns."""
    return await repo.tool_counts(db, session_id, turn_id)


async def current_metrics(db: AsyncSession, state: AppState, s: Session) -> CurrentMetrics:
    """A session's totals now, its tool calls by tool, pending permission requests and whether its agent is live."""
    by_tool, errors = await repo.tool_counts(db, s.id)
    pending = await repo.pending_permission_count(db, s.id)
    return CurrentMetrics(
        session_id=s.id,
        status=s.status,
        message_count=s.message_count,
        tool_call_count=s.tool_call_count,
        turn_count=s.turn_count,
        total_cost_usd=float(s.total_cost_usd or 0),
        total_input_tokens=s.total_input_tokens,
        total_output_tokens=s.total_output_tokens,
        total_cache_read_tokens=s.total_cache_read_tokens,
        total_cache_creation_tokens=s.total_cache_creation_tokens,
        tool_calls_by_tool=by_tool,
        error_count=errors,
        permission_requests_pending=pending,
        live=state.agents.is_live(s.id) if state.agents else False,
    )


async def session_metrics(db: AsyncSession, state: AppState, caller: User, session_id: uuid.UUID) -> SessionMetrics:
    s = await repo.get_session(db, session_id)
    if s is None or (s.user_id != caller.id and not caller.is_admin):
        raise NotFound("Session not found", code="session_not_found")
    current = await current_metrics(db, state, s)
    tool_calls = await repo.tool_call_durations_ms(db, session_id)
    by_tool: dict[str, list[float]] = defaultdict(list)
    for name, ms in tool_calls:
        by_tool[name].append(ms)
    return SessionMetrics(
        **current.model_dump(),
        turn_latency=latency_stats(await repo.turn_durations_ms(db, session_id)),
        tool_call_latency=latency_stats([ms for _, ms in tool_calls]),
        tool_call_latency_by_tool={name: latency_stats(values) for name, values in sorted(by_tool.items())},
    )
