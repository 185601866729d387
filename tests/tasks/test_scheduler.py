"""Schedules driven by an injected clock: one execution per (task, slot) with two schedulers; catch-up policy."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from agent_api.models import Task, TaskExecution, User
from agent_api.models.base import utcnow
from agent_api.state import AppState
from agent_api.tasks import repository as repo
from agent_api.tasks import runner
from agent_api.tasks.scheduler import Scheduler
from tests.conftest import app_state
from tests.tasks.conftest import TASKS, TasksApi


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RecordingStart:
    """Test double for the dispatcher: records which executions a scheduler started instead of running agents."""

    def __init__(self) -> None:
        self.started: list[uuid.UUID] = []

    def __call__(self, _state: AppState, execution_id: uuid.UUID) -> None:
        self.started.append(execution_id)


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


class TestOneExecutionPerSlot:
    async def test_two_schedulers_never_double_run_a_slot(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="tick", schedule_cron="* * * * *")
        first_slot = datetime.fromisoformat(t["next_run_at"])
        clock = FakeClock(first_slot - timedelta(seconds=1))
        starts = [RecordingStart(), RecordingStart()]
        schedulers = [Scheduler(app_state(app), clock=clock, start=s) for s in starts]
        assert await schedulers[0].tick() == []  # not due yet
        for minute in range(5):
            clock.now = first_slot + timedelta(minutes=minute, seconds=2)
            await asyncio.gather(*(s.tick() for s in schedulers), *(s.tick() for s in schedulers))
        executions = (await tasks.executions(t["id"]))["items"]
        slots = sorted(datetime.fromisoformat(e["scheduled_for"]) for e in executions)
        assert slots == [first_slot + timedelta(minutes=m) for m in range(5)]
        assert {e["status"] for e in executions} == {"queued"}
        assert {e["trigger_type"] for e in executions} == {"scheduled"}
        mine = {e["id"] for e in executions}
        started = [str(x) for x in starts[0].started + starts[1].started]
        # Each of this task's executions started exactly once, and nothing else was started for it.
        assert sorted(x for x in started if x in mine) == sorted(mine)
        async with app_state(app).db.transaction(readonly=True) as db:
            stored = set(
                map(
                    str,
                    await db.scalars(
                        select(TaskExecution.id).where(TaskExecution.id.in_([uuid.UUID(x) for x in started]))
                    ),
                )
            )
        assert stored == set(started) and len(started) == len(stored)  # no start for a slot another one won
        task = (await tasks.client.get(f"{TASKS}/{t['id']}", headers=tasks.user.headers)).json()
        assert datetime.fromisoformat(task["next_run_at"]) == first_slot + timedelta(minutes=5)
        assert task["execution_count"] == 5

    async def test_catch_up_runs_the_newest_missed_slot_once(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="tick", schedule_cron="* * * * *")
        first_slot = datetime.fromisoformat(t["next_run_at"])
        start = RecordingStart()
        clock = FakeClock(first_slot + timedelta(minutes=10, seconds=30))  # down for ten minutes
        won = await Scheduler(app_state(app), clock=clock, start=start).tick()
        executions = (await tasks.executions(t["id"]))["items"]
        by_status: dict[str, list[datetime]] = {}
        for e in executions:
            by_status.setdefault(e["status"], []).append(datetime.fromisoformat(e["scheduled_for"]))
        assert by_status["queued"] == [first_slot + timedelta(minutes=10)]
        assert sorted(by_status["skipped"]) == [first_slot + timedelta(minutes=m) for m in range(10)]
        mine = {e["id"] for e in executions}  # other modules' tasks share the database and may be due too
        assert [str(w) for w in won if str(w) in mine] == [e["id"] for e in executions if e["status"] == "queued"]
        assert start.started == won
        task = (await tasks.client.get(f"{TASKS}/{t['id']}", headers=tasks.user.headers)).json()
        assert datetime.fromisoformat(task["next_run_at"]) == first_slot + timedelta(minutes=11)

    async def test_disabled_or_deleted_tasks_do_not_run(self, app: object, tasks: TasksApi) -> None:
        paused = await tasks.create(prompt_template="x", schedule_cron="* * * * *", schedule_enabled=False)
        deleted = await tasks.create(prompt_template="x", schedule_cron="* * * * *")
        await tasks.client.delete(f"{TASKS}/{deleted['id']}", headers=tasks.user.headers)
        start = RecordingStart()
        clock = FakeClock(_minute(utcnow()) + timedelta(minutes=3))
        await Scheduler(app_state(app), clock=clock, start=start).tick()
        assert paused["next_run_at"] is None
        assert (await tasks.executions(paused["id"]))["total"] == 0
        assert (
            await tasks.client.get(f"{TASKS}/{deleted['id']}/executions", headers=tasks.user.headers)
        ).status_code == 404

    async def test_missing_variable_fails_the_slot_without_running(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="about {{topic}}", schedule_cron="* * * * *")
        start = RecordingStart()
        clock = FakeClock(datetime.fromisoformat(t["next_run_at"]) + timedelta(seconds=1))
        assert await Scheduler(app_state(app), clock=clock, start=start).tick() == []
        [execution] = (await tasks.executions(t["id"]))["items"]
        assert execution["status"] == "failed" and execution["error_code"] == "missing_variables"
        assert "topic" in execution["error_message"]


@pytest.mark.slow
class TestScheduledRun:
    async def test_a_due_slot_runs_through_the_agent(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="scheduled hello", schedule_cron="*/5 * * * *", generate_report=False)
        clock = FakeClock(datetime.fromisoformat(t["next_run_at"]) + timedelta(seconds=1))
        [execution_id] = await Scheduler(app_state(app), clock=clock).tick()
        done = await tasks.wait_finished(str(execution_id))
        assert done["status"] == "completed" and done["trigger_type"] == "scheduled"
        assert "scheduled hello" in done["result_data"]["result"]


class TestBudget:
    async def test_a_scheduled_run_over_budget_fails_with_budget_exceeded(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="tick", schedule_cron="* * * * *")
        async with app_state(app).db.transaction() as db:
            user = await db.get(User, uuid.UUID(tasks.user.id))
            assert user is not None
            user.monthly_budget_usd = 0.0
        clock = FakeClock(datetime.fromisoformat(t["next_run_at"]) + timedelta(seconds=1))
        won = await Scheduler(app_state(app), clock=clock).tick()  # the real dispatcher
        mine = (await tasks.executions(t["id"]))["items"]
        assert len(mine) == 1 and mine[0]["id"] in {str(w) for w in won}
        done = await tasks.wait_finished(mine[0]["id"], timeout=30)
        assert done["status"] == "failed" and done["error_code"] == "budget_exceeded"
        assert done["session_id"] is None  # refused before any session or agent was made
        r = await tasks.execute(t["id"])
        assert r.status_code == 402 and r.json()["error"]["code"] == "budget_exceeded"


class TestUniqueKey:
    async def test_the_database_refuses_a_second_execution_for_a_slot(self, app: object, tasks: TasksApi) -> None:
        """What keeps two schedulers apart even when both read the same `next_run_at` (PostgreSQL can interleave
        them; SQLite serializes writers, so the key is exercised here directly)."""
        t = await tasks.create(prompt_template="tick", schedule_cron="* * * * *")
        slot = datetime.fromisoformat(t["next_run_at"])
        async with app_state(app).db.transaction() as db:
            task = await db.get(Task, uuid.UUID(t["id"]))
            assert task is not None
            first = await repo.insert_slot(db, runner.slot_values(task, slot, "queued", "tick", None))
            second = await repo.insert_slot(db, runner.slot_values(task, slot, "queued", "tick", None))
            other = await repo.insert_slot(
                db, runner.slot_values(task, slot + timedelta(minutes=1), "queued", "t", None)
            )
        assert (first, second, other) == (True, False, True)
        assert (await tasks.executions(t["id"]))["total"] == 2

    async def test_an_unrelated_edit_keeps_overdue_slots_for_catch_up(self, app: object, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="tick", schedule_cron="* * * * *")
        first_slot = datetime.fromisoformat(t["next_run_at"])
        r = await tasks.client.patch(f"{TASKS}/{t['id']}", json={"description": "edited"}, headers=tasks.user.headers)
        assert datetime.fromisoformat(r.json()["next_run_at"]) == first_slot
        clock = FakeClock(first_slot + timedelta(minutes=3, seconds=5))
        await Scheduler(app_state(app), clock=clock, start=RecordingStart()).tick()
        statuses = sorted(e["status"] for e in (await tasks.executions(t["id"]))["items"])
        assert statuses == ["queued", "skipped", "skipped", "skipped"]
