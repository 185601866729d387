"""Budget enforcement on the real query path: the 402, concurrent spend, the 80% warning, the monthly reset,
the cap handed to the agent CLI, and per-user rate limits."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from agent_api.app import create_app
from agent_api.errors import BudgetExceeded, RateLimited
from agent_api.models import AuditEvent, SessionEvent, Turn
from agent_api.monitoring.budgets import ensure_within_budget
from agent_api.rate_limits import UserRateLimiter
from tests.conftest import UserAccount, Users, app_state, assert_error_shape, make_client, make_settings, wait_until
from tests.monitoring.factories import add_session, add_turn, set_budget

pytestmark = pytest.mark.slow

RESERVE = 1.0  # per turn in flight; far above what an offline turn costs


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        database_url,
        budget_turn_reserve_usd=RESERVE,
        rate_limit_query_per_minute=0,
        max_live_sessions=4,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def clock(app: object) -> Iterator[list[datetime]]:
    state = app_state(app)
    now = [datetime.now(UTC)]
    original = state.clock
    state.clock = lambda: now[0]
    try:
        yield now
    finally:
        state.clock = original


async def _query(client: httpx.AsyncClient, user: UserAccount, session_id: str, message: str, wait: bool = False):
    return await client.post(
        f"/api/v1/sessions/{session_id}/query",
        json={"message": message, "wait": wait},
        headers=user.headers,
        timeout=120,
    )


async def _turns_of(app: object, user_id: str) -> list[Turn]:
    async with app_state(app).db.transaction(readonly=True) as db:
        return list((await db.scalars(select(Turn).where(Turn.user_id == uuid.UUID(user_id)))).all())


async def _one_turn_cost(app: object, client: httpx.AsyncClient, users: Users) -> float:
    """What one offline "hi" turn costs, measured on a user without a budget."""
    probe = await users.create()
    s = await add_session(app, probe.id)
    r = await _query(client, probe, s, "hi", wait=True)
    assert r.status_code == 200, r.text
    return float(r.json()["cost_usd"])


class TestBlocking:
    async def test_a_spent_budget_refuses_the_query_and_changes_nothing(
        self, app: object, client: httpx.AsyncClient, users: Users
    ) -> None:
        user = await users.create()
        s = await add_session(app, user.id)
        await add_turn(app, s, user.id, 2.0)
        await set_budget(app, user.id, 2.0)
        r = await _query(client, user, s, "hi")
        body = assert_error_shape(r, 402, "budget_exceeded")
        assert body["error"]["details"]["monthly_budget_usd"] == 2.0  # type: ignore[index]
        assert len(await _turns_of(app, user.id)) == 1
        r = await client.get(f"/api/v1/sessions/{s}/messages", headers=user.headers)
        assert r.json()["total"] == 0

        async def audited() -> int:
            async with app_state(app).db.transaction(readonly=True) as db:
                stmt = select(func.count()).where(
                    AuditEvent.action == "budget.blocked", AuditEvent.target_user_id == uuid.UUID(user.id)
                )
                return int(await db.scalar(stmt) or 0)

        assert await wait_until(audited) == 1
        await set_budget(app, user.id, None)
        assert (await _query(client, user, s, "hi", wait=True)).status_code == 200


class TestConcurrentSpend:
    async def test_twenty_concurrent_queries_with_budget_for_one_end_at_most_one_turn_past(
        self, app: object, client: httpx.AsyncClient, users: Users
    ) -> None:
        cost = await _one_turn_cost(app, client, users)
        assert cost > 0
        user = await users.create()
        limit = cost * 1.5
        await set_budget(app, user.id, limit)
        session_ids = [await add_session(app, user.id, status="created") for _ in range(20)]

        responses = await asyncio.gather(*(_query(client, user, s, "hi") for s in session_ids))
        codes = [r.status_code for r in responses]
        assert set(codes) == {202, 402} and codes.count(202) <= 2, codes

        async def all_finished() -> list[Turn] | None:
            turns = await _turns_of(app, user.id)
            return turns if turns and all(t.finished_at for t in turns) else None

        await wait_until(all_finished, timeout=90)
        # Keep asking until refused: whatever is left admits at most one more (capped) turn.
        for s in session_ids:
            r = await _query(client, user, s, "hi", wait=True)
            if r.status_code == 402:
                break
            assert r.status_code == 200, r.text
        assert r.status_code == 402
        turns = sorted(await wait_until(all_finished, timeout=90), key=lambda t: t.created_at)
        assert len(turns) == 2, [(t.created_at, t.cost_usd) for t in turns]
        # The reserve for a turn in flight exceeds the budget, so no two turns of the user ever overlapped
        # (a turn admitted while an earlier one was still running would be the race this guards against).
        for earlier, later in itertools.pairwise(turns):
            assert earlier.finished_at is not None and earlier.finished_at <= later.created_at
        spent = sum(float(t.cost_usd) for t in turns)
        assert sum(float(t.cost_usd) for t in turns[:-1]) < limit <= spent  # only the last turn went past
        assert spent <= limit + cost * 1.01, (spent, limit, cost)


class TestWarning:
    async def test_crossing_eighty_percent_sends_one_budget_warning(
        self, app: object, client: httpx.AsyncClient, users: Users
    ) -> None:
        cost = await _one_turn_cost(app, client, users)
        user = await users.create()
        s = await add_session(app, user.id)
        limit = 10.0
        await add_turn(app, s, user.id, limit * 0.8 - cost / 2)  # the next turn crosses 80%
        await set_budget(app, user.id, limit)
        r = await _query(client, user, s, "hi", wait=True)
        assert r.status_code == 200, r.text
        async with app_state(app).db.transaction(readonly=True) as db:
            stmt = select(SessionEvent).where(
                SessionEvent.session_id == uuid.UUID(s), SessionEvent.type == "budget_warning"
            )
            warnings = list((await db.scalars(stmt)).all())
        assert len(warnings) == 1
        assert warnings[0].data["monthly_budget_usd"] == limit and warnings[0].data["percent_used"] >= 80
        # Further turns above the level do not repeat it.
        assert (await _query(client, user, s, "hi again", wait=True)).status_code == 200
        async with app_state(app).db.transaction(readonly=True) as db:
            stmt = select(func.count()).where(
                SessionEvent.session_id == uuid.UUID(s), SessionEvent.type == "budget_warning"
            )
            assert await db.scalar(stmt) == 1


class TestPeriodReset:
    async def test_the_budget_resets_when_the_month_turns(
        self, app: object, client: httpx.AsyncClient, users: Users, clock: list[datetime]
    ) -> None:
        user = await users.create()
        s = await add_session(app, user.id)
        clock[0] = datetime(2032, 1, 31, 23, 30, tzinfo=UTC)
        await add_turn(app, s, user.id, 5.0, at=clock[0])
        await set_budget(app, user.id, 5.0)
        state = app_state(app)
        with pytest.raises(BudgetExceeded):
            async with state.db.transaction() as db:
                await ensure_within_budget(db, state, uuid.UUID(user.id))
        r = await client.get(f"/api/v1/monitoring/costs/budget/{user.id}", headers=user.headers)
        assert r.json()["is_over_budget"] is True and r.json()["days_remaining"] == 1

        clock[0] = datetime(2032, 2, 1, 0, 0, tzinfo=UTC)
        async with state.db.transaction() as db:
            assert await ensure_within_budget(db, state, uuid.UUID(user.id)) == pytest.approx(5.0)
        body = (await client.get(f"/api/v1/monitoring/costs/budget/{user.id}", headers=user.headers)).json()
        assert body["current_month_cost_usd"] == 0 and body["remaining_budget_usd"] == 5.0
        assert body["days_remaining"] == 29  # 2032 is a leap year


class TestTurnCap:
    async def test_a_budgeted_turn_runs_with_max_budget_and_the_client_restarts_when_it_drifts(
        self, app: object, client: httpx.AsyncClient, users: Users
    ) -> None:
        user = await users.create()
        s = await add_session(app, user.id)
        await set_budget(app, user.id, 5.0)
        assert (await _query(client, user, s, "hi", wait=True)).status_code == 200
        pool = app_state(app).require_agents()
        first = pool._agents[uuid.UUID(s)]
        assert first.spec.max_budget_usd == pytest.approx(5.0)
        # The same allowance (less this session's own spend) keeps the live client.
        assert (await _query(client, user, s, "again", wait=True)).status_code == 200
        assert pool._agents[uuid.UUID(s)] is first
        # Spend elsewhere shrinks what this turn may use: the client restarts with the new cap.
        other = await add_session(app, user.id)
        await add_turn(app, other, user.id, 2.0)
        r = await _query(client, user, s, "recall", wait=True)
        assert r.status_code == 200 and "hi" in r.json()["result"]  # the conversation resumed
        second = pool._agents[uuid.UUID(s)]
        assert second is not first
        spent = sum(float(t.cost_usd) for t in await _turns_of(app, user.id)) - float(r.json()["cost_usd"])
        assert second.spec.max_budget_usd == pytest.approx(5.0 - spent)


class TestRateLimit:
    async def test_over_the_limit_is_429_with_retry_after(
        self, app: object, users: Users, client: httpx.AsyncClient
    ) -> None:
        state = app_state(app)
        state.settings.rate_limit_query_per_minute = 2
        try:
            user = await users.create()
            s = await add_session(app, user.id)
            await set_budget(app, user.id, 0.0)  # every counted query then stops at the budget: no agent runs
            assert (await _query(client, user, s, "hi")).status_code == 402
            assert (await _query(client, user, s, "hi")).status_code == 402
            r = await _query(client, user, s, "hi")
            assert_error_shape(r, 429, "rate_limited")
            assert 1 <= int(r.headers["retry-after"]) <= 60
            async with make_client(app, "127.0.0.1") as local:  # /metrics answers local scrapers only
                exposition = (await local.get("/metrics")).text
            assert 'agent_api_rate_limited_total{action="query"} 1.0' in exposition
            other = await users.create()
            s2 = await add_session(app, other.id)
            await set_budget(app, other.id, 0.0)
            assert (await _query(client, other, s2, "hi")).status_code == 402  # limits are per user
        finally:
            state.settings.rate_limit_query_per_minute = 0

    def test_the_window_slides(self) -> None:
        now = [0.0]
        limiter = UserRateLimiter(clock=lambda: now[0])
        user = uuid.uuid4()
        limiter.check(user, "execute", 2)
        limiter.check(user, "execute", 2)
        with pytest.raises(RateLimited) as raised:
            limiter.check(user, "execute", 2)
        assert raised.value.headers["Retry-After"] == "60"
        limiter.check(user, "query", 2)  # actions are counted apart
        now[0] = 60.5
        limiter.check(user, "execute", 2)
        limiter.check(user, "execute", 0)  # 0 switches the limit off
