"""Cost reports from the per-turn rows, and the budget status: access, grouping, ranges, periods."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from agent_api.monitoring.costs import period_bounds
from tests.conftest import UserAccount, Users, app_state, assert_error_shape
from tests.monitoring.factories import add_session, add_turn, set_budget

T0 = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)  # a Monday in the future: no other test has turns there


@pytest.fixture
def frozen_clock(app: object) -> Iterator[list[datetime]]:
    """The app's clock reads the first element of the returned list; tests move it."""
    state = app_state(app)
    now = [T0]
    original = state.clock
    state.clock = lambda: now[0]
    try:
        yield now
    finally:
        state.clock = original


def _costs(client: httpx.AsyncClient, user: UserAccount, who: str, **params: object) -> object:
    return client.get(f"/api/v1/monitoring/costs/user/{who}", params=params, headers=user.headers)


async def _spender(app: object, users: Users) -> tuple[UserAccount, list[str], float]:
    """A user with turns over three days, two sessions and two models; returns them and the total."""
    user = await users.create()
    a = await add_session(app, user.id, name="alpha")
    b = await add_session(app, user.id, name="beta")
    opus = {"model-a": {"costUSD": 3.0, "inputTokens": 1, "outputTokens": 1}}
    mixed = {"model-a": {"costUSD": 1.0}, "model-b": {"costUSD": 3.0}}
    await add_turn(app, a, user.id, 0.5, at=T0, model_usage=opus, tools=[("Bash", 10)])
    await add_turn(app, a, user.id, 0.25, at=T0 + timedelta(days=1), model_usage=mixed)
    await add_turn(app, b, user.id, 1.0, at=T0 + timedelta(days=2), model_usage=None, tools=[("Read", 5)] * 2)
    return user, [a, b], 1.75


class TestAccess:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient, owner: UserAccount) -> None:
        r = await client.get(f"/api/v1/monitoring/costs/user/{owner.id}")
        assert_error_shape(r, 401)
        r = await client.get(f"/api/v1/monitoring/costs/budget/{owner.id}")
        assert_error_shape(r, 401)

    async def test_another_users_costs_are_404_and_admins_see_them(
        self, client: httpx.AsyncClient, users: Users, owner: UserAccount
    ) -> None:
        other = await users.create()
        admin = await users.create(admin=True)
        for path in ("costs/user", "costs/budget"):
            r = await client.get(f"/api/v1/monitoring/{path}/{owner.id}", headers=other.headers)
            assert_error_shape(r, 404, "user_not_found")
            r = await client.get(f"/api/v1/monitoring/{path}/{owner.id}", headers=owner.headers)
            assert r.status_code == 200, r.text
            r = await client.get(f"/api/v1/monitoring/{path}/{owner.id}", headers=admin.headers)
            assert r.status_code == 200, r.text
        missing = "00000000-0000-0000-0000-000000000000"
        r = await client.get(f"/api/v1/monitoring/costs/user/{missing}", headers=admin.headers)
        assert_error_shape(r, 404, "user_not_found")


class TestGrouping:
    @pytest.mark.parametrize("group_by", ["day", "session", "model"])
    async def test_every_grouping_adds_up_to_the_turn_costs(
        self, app: object, client: httpx.AsyncClient, users: Users, group_by: str
    ) -> None:
        user, session_ids, total = await _spender(app, users)
        start, end = T0.isoformat(), (T0 + timedelta(days=3)).isoformat()
        r = await _costs(client, user, user.id, start=start, end=end, group_by=group_by)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total_cost_usd"] == pytest.approx(total)
        assert sum(b["cost_usd"] for b in body["breakdown"]) == pytest.approx(total)
        assert body["total_turns"] == 3 and body["total_sessions"] == 2 and body["total_tool_calls"] == 3
        assert body["total_input_tokens"] == 30 and body["total_tokens"] == 45
        assert body["average_cost_per_session"] == pytest.approx(total / 2)
        assert body["period"] is None and body["group_by"] == group_by
        buckets = {b["key"]: b["cost_usd"] for b in body["breakdown"]}
        if group_by == "day":
            assert buckets == pytest.approx({"2031-03-10": 0.5, "2031-03-11": 0.25, "2031-03-12": 1.0})
        elif group_by == "session":
            assert buckets == pytest.approx({session_ids[0]: 0.75, session_ids[1]: 1.0})
            assert {b["label"] for b in body["breakdown"]} == {"alpha", "beta"}
        else:
            # The mixed turn splits 1:3 between the models; a turn without model usage is "unknown".
            assert buckets == pytest.approx({"model-a": 0.5 + 0.0625, "model-b": 0.1875, "unknown": 1.0})


class TestRanges:
    async def test_start_is_inclusive_and_end_exclusive(
        self, app: object, client: httpx.AsyncClient, users: Users
    ) -> None:
        user = await users.create()
        s = await add_session(app, user.id)
        await add_turn(app, s, user.id, 0.1, at=T0)
        await add_turn(app, s, user.id, 0.2, at=T0 + timedelta(hours=1))
        r = await _costs(client, user, user.id, start=T0.isoformat(), end=(T0 + timedelta(hours=1)).isoformat())
        assert r.json()["total_cost_usd"] == pytest.approx(0.1) and r.json()["total_turns"] == 1
        r = await _costs(
            client, user, user.id, start=(T0 + timedelta(microseconds=1)).isoformat(), end="2031-03-11T00:00:00Z"
        )
        assert r.json()["total_cost_usd"] == pytest.approx(0.2)
        # A start without an offset is UTC.
        r = await _costs(client, user, user.id, start="2031-03-10T12:00:00", end="2031-03-10T12:00:01")
        assert r.json()["total_cost_usd"] == pytest.approx(0.1)

    @pytest.mark.parametrize(
        "params",
        [
            {"period": "daily", "start": "2031-03-10T00:00:00Z"},
            {"start": "2031-03-11T00:00:00Z", "end": "2031-03-10T00:00:00Z"},
            {"end": "2031-03-10T00:00:00Z"},
            {"period": "yearly"},
            {"group_by": "tool"},
            {"start": "yesterday"},
        ],
    )
    async def test_bad_ranges_are_422(self, client: httpx.AsyncClient, owner: UserAccount, params: dict) -> None:
        r = await _costs(client, owner, owner.id, **params)
        assert_error_shape(r, 422)

    async def test_named_periods_are_calendar_periods_holding_now(
        self, app: object, client: httpx.AsyncClient, users: Users, frozen_clock: list[datetime]
    ) -> None:
        user = await users.create()
        s = await add_session(app, user.id)
        now = T0 + timedelta(days=2, minutes=30)  # Wednesday 12:30
        frozen_clock[0] = now
        await add_turn(app, s, user.id, 1.0, at=now - timedelta(minutes=10))  # this hour
        await add_turn(app, s, user.id, 2.0, at=now - timedelta(hours=3))  # today
        await add_turn(app, s, user.id, 4.0, at=now - timedelta(days=2))  # Monday: this week
        await add_turn(app, s, user.id, 8.0, at=now - timedelta(days=5))  # last week, this month
        await add_turn(app, s, user.id, 16.0, at=datetime(2031, 2, 28, 23, 59, tzinfo=UTC))  # last month
        expected = {"hourly": 1.0, "daily": 3.0, "weekly": 7.0, "monthly": 15.0}
        for period, cost in expected.items():
            r = await _costs(client, user, user.id, period=period)
            body = r.json()
            assert body["total_cost_usd"] == pytest.approx(cost), (period, body)
            start, end = period_bounds(now, period)  # type: ignore[arg-type]
            assert body["period"] == period
            assert (datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])) == (start, end)
        r = await _costs(client, user, user.id)
        assert r.json()["period"] == "monthly"


class TestBudgetStatus:
    async def test_fields_follow_the_month_and_the_budget(
        self, app: object, client: httpx.AsyncClient, users: Users, frozen_clock: list[datetime]
    ) -> None:
        user = await users.create()
        r = await client.get(f"/api/v1/monitoring/costs/budget/{user.id}", headers=user.headers)
        assert r.json()["monthly_budget_usd"] is None and r.json()["remaining_budget_usd"] is None
        assert r.json()["is_over_budget"] is False and r.json()["percent_used"] is None
        s = await add_session(app, user.id)
        await add_turn(app, s, user.id, 3.0, at=T0)
        await set_budget(app, user.id, 4.0)
        r = await client.get(f"/api/v1/monitoring/costs/budget/{user.id}", headers=user.headers)
        body = r.json()
        assert body["user_id"] == user.id
        assert body["monthly_budget_usd"] == 4.0 and body["current_month_cost_usd"] == pytest.approx(3.0)
        assert body["remaining_budget_usd"] == pytest.approx(1.0) and body["percent_used"] == pytest.approx(75.0)
        assert body["is_over_budget"] is False
        assert body["days_remaining"] == 22  # March 10 to 31, today included
        await add_turn(app, s, user.id, 1.0, at=T0)
        body = (await client.get(f"/api/v1/monitoring/costs/budget/{user.id}", headers=user.headers)).json()
        assert body["is_over_budget"] is True and body["remaining_budget_usd"] == 0


def test_by_model_counts_each_turn_that_used_the_model() -> None:
    """Cost is split by share; a turn is counted once for every model it used, never rounded away."""
    from agent_api.monitoring.costs import by_model

    usage = {m: {"costUSD": 0.1} for m in ("a", "b", "c")}
    buckets = {b.key: b for b in by_model([(0.3, 30, 3, usage), (0.2, 10, 1, {"a": {"costUSD": 1.0}})])}
    assert {k: b.turns for k, b in buckets.items()} == {"a": 2, "b": 1, "c": 1}
    assert sum(b.cost_usd for b in buckets.values()) == pytest.approx(0.5)
