"""The in-process schedule tick: each due slot of each enabled task becomes exactly one execution.

Uniqueness is the database's (task, slot) key, so several schedulers (replicas, or a restart racing the old
process) can tick at once: only the one whose row went in runs the slot. Catch-up policy after downtime: the
newest missed slot runs once; the older ones are recorded as `skipped` (up to MAX_SKIPPED_RECORDED of them).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from agent_api.errors import ValidationFailed
from agent_api.models import Task
from agent_api.models.base import utcnow
from agent_api.state import AppState
from agent_api.tasks import repository as repo
from agent_api.tasks import runner
from agent_api.tasks.schedule import due_slots, next_slot

log = logging.getLogger("agent_api.tasks")


class Scheduler:
    def __init__(
        self,
        state: AppState,
        *,
        clock: Callable[[], datetime] = utcnow,
        start: Callable[[AppState, uuid.UUID], object] = lambda state, execution_id: state.dispatcher.submit_execution(
            execution_id
        ),
    ) -> None:
        self.state = state
        self.clock = clock
        self.start = start

    async def tick(self) -> list[uuid.UUID]:
        """Claim every slot due now; returns the executions this scheduler won and started."""
        now = self.clock()
        async with self.state.db.transaction(readonly=True) as db:
            due = await repo.due_task_ids(db, now)
        won: list[uuid.UUID] = []
        for task_id in due:
            try:
                execution_id = await self._claim(task_id, now)
            except Exception:
                log.exception("scheduling task %s failed", task_id)
                continue
            if execution_id is not None:
                won.append(execution_id)
                self.start(self.state, execution_id)
        return won

    async def _claim(self, task_id: uuid.UUID, now: datetime) -> uuid.UUID | None:
        async with self.state.db.transaction() as db:
            task = await db.get(Task, task_id)
            if task is None or not task.is_scheduled or task.next_run_at is None or task.next_run_at > now:
                return None  # another scheduler moved it on, or it changed
            assert task.schedule_cron is not None
            slots = due_slots(task.schedule_cron, task.schedule_timezone, task.next_run_at, now)
            for missed in slots[:-1]:
                await repo.insert_slot(
                    db, runner.slot_values(task, missed, "skipped", "", "missed while the server was not running")
                )
            try:
                prompt, status, error = runner.render_prompt(task, {}), "queued", None
            except ValidationFailed as exc:
                prompt, status, error = "", "failed", exc.message
            values = runner.slot_values(task, slots[-1], status, prompt, error)
            inserted = await repo.insert_slot(db, values)
            following = next_slot(task.schedule_cron, task.schedule_timezone, max(now, slots[-1]))
            await repo.advance_schedule(db, task.id, task.next_run_at, following, slots[-1])
            if inserted:
                await repo.count_execution(db, task.id)
            return values["id"] if inserted and status == "queued" else None
