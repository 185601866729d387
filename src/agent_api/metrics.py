"""Prometheus metrics: one registry per application (several apps share a test process), the HTTP middleware
that labels requests by route template, and the exposition that adds database-derived gauges at scrape time."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A path that matched no route is labelled with this, so scanners cannot blow up the label set.
UNMATCHED_ROUTE = "<unmatched>"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AppMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "agent_api_http_requests", "HTTP requests served", ["method", "route", "status"], registry=registry
        )
        self.http_latency = Histogram(
            "agent_api_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.turns = Counter("agent_api_turns", "Agent turns finished, by outcome", ["status"], registry=registry)
        self.tool_calls = Counter("agent_api_tool_calls", "Tool calls made by agents", ["tool"], registry=registry)
        self.tokens = Counter("agent_api_tokens", "Model tokens used by turns", ["kind"], registry=registry)
        self.cost = Counter("agent_api_cost_usd", "Model cost of turns in USD", registry=registry)
        self.budget_warnings = Counter(
            "agent_api_budget_warnings", "Turns that crossed a user's budget warning level", registry=registry
        )
        self.budget_blocks = Counter(
            "agent_api_budget_blocks", "Requests refused because the monthly budget is spent", registry=registry
        )
        self.rate_limited = Counter(
            "agent_api_rate_limited", "Requests refused by a per-user rate limit", ["action"], registry=registry
        )
        # Gauges below are set from live state and the database when /metrics is scraped.
        self.live_agents = Gauge("agent_api_live_agents", "Live SDK clients in this process", registry=registry)
        self.running_turns = Gauge("agent_api_running_turns", "Turns running in this process", registry=registry)
        self.sessions = Gauge("agent_api_sessions", "Sessions by status", ["status"], registry=registry)
        self.task_executions = Gauge(
            "agent_api_task_executions", "Task executions by status", ["status"], registry=registry
        )
        self.db_pool = Gauge("agent_api_db_pool_connections", "Database pool connections", ["state"], registry=registry)

    def record_turn(self, status: str, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        self.turns.labels(status).inc()
        self.tokens.labels("input").inc(max(0, input_tokens))
        self.tokens.labels("output").inc(max(0, output_tokens))
        if cost_usd > 0:
            self.cost.inc(cost_usd)

    def set_pool(self, pool: Any) -> None:
        """Pool usage when the pool reports it (a queue pool does; SQLite's may not)."""
        for state, attr in (("size", "size"), ("checked_out", "checkedout"), ("overflow", "overflow")):
            probe = getattr(pool, attr, None)
            if callable(probe):
                self.db_pool.labels(state).set(probe())

    def set_labelled(self, gauge: Gauge, counts: dict[str, int], known: tuple[str, ...] = ()) -> None:
        # Known labels are always exported, at zero when absent, so a series does not vanish when it empties.
        for label in {*known, *counts}:
            gauge.labels(label).set(counts.get(label, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's template, rebuilt from the path and its parameters (a route object knows only its
    own router's part of the path)."""
    if scope.get("route") is None:
        return UNMATCHED_ROUTE
    names = {str(v): "{" + k + "}" for k, v in (scope.get("path_params") or {}).items()}
    return "/".join(names.get(segment, segment) for segment in scope["path"].split("/"))


class HttpMetricsMiddleware:
    """Counts and times every HTTP request, labelled by the route template (`/api/v1/sessions/{session_id}`)."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            template = route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.http_requests.labels(method, template, str(status["code"])).inc()
            self.metrics.http_latency.labels(method, template).observe(time.perf_counter() - started)


_BUILT_IN_TOOLS = frozenset(
    {
        "Agent",
        "Bash",
        "BashOutput",
        "Edit",
        "ExitPlanMode",
        "Glob",
        "Grep",
        "KillShell",
        "LS",
        "MultiEdit",
        "NotebookEdit",
        "NotebookRead",
        "Read",
        "Skill",
        "Task",
        "TodoWrite",
        "WebFetch",
        "WebSearch",
        "Write",
    }
)


def tool_label(name: str) -> str:
    """A bounded label: built-in tools by name, MCP tools as `mcp`, anything else a model names as `other`
    (tool names come from the model and from users' server names; each label value is a new series)."""
    if name in _BUILT_IN_TOOLS:
        return name
    return "mcp" if name.startswith("mcp__") else "other"
