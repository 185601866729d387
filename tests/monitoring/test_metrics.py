"""`GET /metrics` (Prometheus) and `GET /monitoring/metrics/session/{id}`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_api.app import create_app
from tests.conftest import SessionsApi, UserAccount, Users, assert_error_shape, make_client, make_settings
from tests.monitoring.factories import add_session, add_turn

pytestmark = pytest.mark.slow


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """From loopback: without a metrics token, `/metrics` answers only local scrapers."""
    async with make_client(app, "127.0.0.1") as c:
        yield c


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class TestPrometheus:
    async def test_counters_move_after_a_request_and_a_turn(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        before = await scrape(client)
        s = await sessions.create(permission_mode="bypassPermissions")
        route = {"method": "POST", "route": "/api/v1/sessions"}
        r = await sessions.query(s["id"], "run: echo metrics")
        assert r.status_code == 200, r.text
        done = r.json()
        after = await scrape(client)

        assert (
            value(after, "agent_api_http_requests_total", status="201", **route)
            == value(before, "agent_api_http_requests_total", status="201", **route) + 1
        )
        assert value(after, "agent_api_http_request_duration_seconds_count", **route) >= 1
        query_route = {"method": "POST", "route": "/api/v1/sessions/{session_id}/query", "status": "200"}
        assert value(after, "agent_api_http_requests_total", **query_route) >= 1  # by template, not by id
        assert not any(s["id"] in str(labels) for _, labels in after)
        assert (
            value(after, "agent_api_turns_total", status="completed")
            == value(before, "agent_api_turns_total", status="completed") + 1
        )
        assert (
            value(after, "agent_api_tool_calls_total", tool="Bash")
            == value(before, "agent_api_tool_calls_total", tool="Bash") + 1
        )
        input_delta = value(after, "agent_api_tokens_total", kind="input") - value(
            before, "agent_api_tokens_total", kind="input"
        )
        assert input_delta == done["usage"]["input_tokens"]
        cost_delta = value(after, "agent_api_cost_usd_total") - value(before, "agent_api_cost_usd_total")
        assert cost_delta == pytest.approx(done["cost_usd"])
        assert value(after, "agent_api_live_agents") >= 1
        assert value(after, "agent_api_sessions", status="active") >= 1
        assert ("agent_api_task_executions", (("status", "completed"),)) in after
        assert value(after, "agent_api_db_pool_connections", state="checked_out") >= 1  # this scrape's own

    async def test_unknown_paths_share_one_label(self, client: httpx.AsyncClient) -> None:
        await client.get("/no/such/path/123")
        samples = await scrape(client)
        labels = {dict(lbl).get("route") for name, lbl in samples if name == "agent_api_http_requests_total"}
        assert "<unmatched>" in labels and not any("123" in str(label) for label in labels)


class TestConfiguration:
    async def test_a_configured_token_is_required(self, database_url: str, tmp_path: object) -> None:
        settings = make_settings(tmp_path, database_url, metrics_token="scrape-secret")  # type: ignore[arg-type]
        application = create_app(settings)
        async with application.router.lifespan_context(application), make_client(application) as c:
            assert_error_shape(await c.get("/metrics"), 401)
            assert_error_shape(await c.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
            assert "agent_api_http_requests_total" in str(await scrape(c, Authorization="Bearer scrape-secret"))

    async def test_disabled_metrics_are_not_served(self, database_url: str, tmp_path: object) -> None:
        application = create_app(make_settings(tmp_path, database_url, metrics_enabled=False))  # type: ignore[arg-type]
        async with application.router.lifespan_context(application), make_client(application) as c:
            assert (await c.get("/metrics")).status_code == 404
            assert (await c.get("/api/v1/monitoring/health/database")).status_code == 200


class TestSessionMetrics:
    async def test_owner_and_admin_see_metrics_with_percentiles_others_404(
        self, app: object, client: httpx.AsyncClient, users: Users, owner: UserAccount
    ) -> None:
        s = await add_session(app, owner.id)
        for ms in (100, 200, 300, 400):
            await add_turn(app, s, owner.id, 0.01, duration_ms=ms, tools=[("Bash", ms // 10), ("Read", 1)])
        path = f"/api/v1/monitoring/metrics/session/{s}"
        assert_error_shape(await client.get(path), 401)
        stranger = await users.create()
        assert_error_shape(await client.get(path, headers=stranger.headers), 404, "session_not_found")
        admin = await users.create(admin=True)
        for who in (owner, admin):
            r = await client.get(path, headers=who.headers)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["session_id"] == s and body["turn_count"] == 4 and body["tool_call_count"] == 8
            assert body["total_cost_usd"] == pytest.approx(0.04) and body["live"] is False
            turns = body["turn_latency"]
            assert turns["count"] == 4 and turns["p50_ms"] == 250 and turns["max_ms"] == 400
            assert turns["p90_ms"] == pytest.approx(370) and turns["mean_ms"] == 250
            assert body["tool_call_latency"]["count"] == 8
            assert body["tool_call_latency_by_tool"]["Bash"]["p50_ms"] == 25
            assert body["tool_call_latency_by_tool"]["Read"]["max_ms"] == 1

    async def test_a_session_without_turns_has_empty_latencies(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        s = await add_session(app, owner.id)
        body = (await client.get(f"/api/v1/monitoring/metrics/session/{s}", headers=owner.headers)).json()
        assert body["turn_latency"] == {
            "count": 0,
            "p50_ms": None,
            "p90_ms": None,
            "p95_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "mean_ms": None,
        }


def test_tool_labels_stay_bounded() -> None:
    """Tool names come from the model and from users' MCP server names; labels must not grow with them."""
    from agent_api.metrics import tool_label

    assert tool_label("Bash") == "Bash" and tool_label("Write") == "Write"
    assert tool_label("mcp__acme-secret-server__search") == "mcp"
    assert tool_label("anything a model invents " * 10) == "other"
