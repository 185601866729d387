"""Response bodies of the cost, budget and session-metrics routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Period = Literal["hourly", "daily", "weekly", "monthly"]
GroupBy = Literal["day", "session", "model"]


class CostBucket(BaseModel):
    key: str = Field(description="The day (YYYY-MM-DD), the session id or the model name")
    label: str | None = Field(default=None, description="The session's name, for group_by=session")
    cost_usd: float
    turns: int
    input_tokens: int
    output_tokens: int


class CostReport(BaseModel):
    user_id: uuid.UUID
    period: Period | None = Field(description="The named period, or null for an explicit start/end range")
    start: datetime = Field(description="Inclusive")
    end: datetime = Field(description="Exclusive")
    group_by: GroupBy
    total_cost_usd: float
    total_sessions: int
    total_messages: int
    total_tool_calls: int
    total_turns: int
    total_input_tokens: int
    total_output_tokens: int
    total_tokens: int
    average_cost_per_session: float
    breakdown: list[CostBucket]


class BudgetRead(BaseModel):
    user_id: uuid.UUID
    monthly_budget_usd: float | None = Field(description="The limit that applies (the user's own or the default)")
    current_month_cost_usd: float
    remaining_budget_usd: float | None
    percent_used: float | None
    is_over_budget: bool
    days_remaining: int = Field(description="Days left in the budget month, today included")
    period_start: datetime
    period_end: datetime


class LatencyStats(BaseModel):
    count: int
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None


class CurrentMetrics(BaseModel):
    session_id: uuid.UUID
    status: str
    message_count: int
    tool_call_count: int
    turn_count: int
    total_cost_usd: float
    total_input_tokens: int
    total_output_tokens: int
    total_cache_read_tokens: int
    total_cache_creation_tokens: int
    tool_calls_by_tool: dict[str, int]
    error_count: int
    permission_requests_pending: int
    live: bool


class SessionMetrics(CurrentMetrics):
    turn_latency: LatencyStats
    tool_call_latency: LatencyStats
    tool_call_latency_by_tool: dict[str, LatencyStats]
