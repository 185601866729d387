"""The dispatcher: the one owner of work in flight (turns, task executions, agent warm-ups, interrupts, permission
waits, webhook deliveries), so that nothing else keeps a dictionary of running work and the database row stays the truth.

Services never start work themselves: they queue it on their transaction (`db.after_commit`), and it reaches the
dispatcher only once that transaction commits. The dispatcher imports no domain: the work it runs is handed to it
at start-up as `Jobs`. `InProcessDispatcher` runs everything on this process's event loop (the embedded default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from agent_api.background import TaskRegistry
from agent_api.runtime.pool import AgentPool

log = logging.getLogger("agent_api.dispatcher")

# How long a drain waits for interrupted turns to record how they ended before it closes their agents.
DRAIN_TURNS_S = 10.0
# A person's answer to a permission request: ("allow" | "deny", the reason given).
Answer = tuple[str, str | None]


@dataclass(frozen=True)
class Jobs:
    """The work the dispatcher runs, supplied by the domains when the application starts."""

    run_turn: Callable[[uuid.UUID, uuid.UUID, uuid.UUID], Coroutine[Any, Any, None]]
    run_execution: Callable[[uuid.UUID], Coroutine[Any, Any, None]]
    warm_agent: Callable[[uuid.UUID], Coroutine[Any, Any, None]]
    # One look for due task schedules (each slot claimed once, whichever process looks).
    tick_schedules: Callable[[], Coroutine[Any, Any, Any]]
    # Send the webhook attempts that are due (each claimed once); the seconds until the next is due, or None.
    deliver_webhooks: Callable[[], Coroutine[Any, Any, float | None]] | None = None


class Dispatcher(ABC):
    draining: bool = False

    @abstractmethod
    def submit_turn(self, session_id: uuid.UUID, turn_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Run a recorded turn (its row says what to run)."""

    @abstractmethod
    def submit_execution(self, execution_id: uuid.UUID) -> None:
        """Run a queued task execution."""

    @abstractmethod
    def warm_agent(self, session_id: uuid.UUID) -> None:
        """Start the session's agent process ahead of its first message."""

    @abstractmethod
    def start_schedules(self, interval_s: float) -> None:
        """Look for due task schedules every `interval_s` from now on."""

    @abstractmethod
    def start_deliveries(self, idle_s: float) -> None:
        """Send webhook deliveries as they fall due, looking at least every `idle_s` (others may queue them)."""

    @abstractmethod
    def wake_deliveries(self) -> None:
        """New deliveries were committed: look now."""

    @abstractmethod
    async def wait_turn(self, session_id: uuid.UUID, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait until the session's submitted turn has finished; False when `timeout` came first."""

    @abstractmethod
    async def wait_turn_or_question(
        self,
        session_id: uuid.UUID,
        timeout: float | None,  # noqa: ASYNC109
    ) -> Literal["finished", "question", "timeout"]:
        """Wait until the session's turn finishes or asks a person something, whichever comes first."""

    @abstractmethod
    async def interrupt(self, session_id: uuid.UUID) -> bool:
        """Stop the session's turn, also one not yet started; False when it has none."""

    def take_interrupt(self, session_id: uuid.UUID) -> bool:
        """Whether an interrupt arrived for the session's turn before it reached the agent (and forget it)."""
        return False

    @abstractmethod
    async def stop_agent(self, session_id: uuid.UUID) -> None:
        """Interrupt the session's turn, release its permission waits and end its agent process."""

    @abstractmethod
    async def cancel_execution(self, execution_id: uuid.UUID, session_id: uuid.UUID | None) -> None:
        """Stop a cancelled execution's turn (the cancel itself is already on its row)."""

    @abstractmethod
    def expect_permission(self, request_id: uuid.UUID, session_id: uuid.UUID) -> None:
        """Get ready for an answer before the request is committed, so one that comes at once is not missed."""

    @abstractmethod
    def discard_permission(self, request_id: uuid.UUID) -> None:
        """Forget a request that was never recorded."""

    @abstractmethod
    async def wait_permission(
        self,
        request_id: uuid.UUID,
        session_id: uuid.UUID,
        timeout: float,  # noqa: ASYNC109
    ) -> Answer | None:
        """Wait for a person's answer to a recorded permission request; None when `timeout` came first."""

    @abstractmethod
    def answer_permission(self, request_id: uuid.UUID, decision: str, reason: str | None) -> bool:
        """Hand a committed answer to the turn waiting for it; False when no turn here waits for it."""

    @abstractmethod
    def running_turns(self) -> int: ...

    @abstractmethod
    def runs_execution(self, execution_id: uuid.UUID) -> bool: ...

    @abstractmethod
    async def drain(self) -> None:
        """Take no new work, interrupt running turns (they record how they ended), end the agent processes."""


class InProcessDispatcher(Dispatcher):
    def __init__(self, jobs: Jobs, agents: AgentPool | None, registry: TaskRegistry) -> None:
        self.jobs = jobs
        self.agents = agents
        self.registry = registry
        self._turns: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._executions: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._interrupts: set[uuid.UUID] = set()
        self._waiters: dict[uuid.UUID, tuple[uuid.UUID, asyncio.Future[Answer]]] = {}
        # Set while a session's turn waits for a person.
        self._questions: dict[uuid.UUID, asyncio.Event] = {}
        self._deliveries_due = asyncio.Event()

    def _track(self, table: dict[uuid.UUID, asyncio.Task[None]], key: uuid.UUID, task: asyncio.Task[None]) -> None:
        table[key] = task
        task.add_done_callback(lambda t: table.pop(key, None) if table.get(key) is t else None)

    def submit_turn(self, session_id: uuid.UUID, turn_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self._interrupts.discard(session_id)  # an interrupt aimed at an earlier turn is spent
        if self.draining:
            # Accepted just before the drain began: it runs only to record itself interrupted (the drain waits).
            self._interrupts.add(session_id)
        task = self.registry.spawn(self.jobs.run_turn(session_id, turn_id, user_id), name=f"turn-{turn_id}")
        self._track(self._turns, session_id, task)
        task.add_done_callback(
            lambda _t: self._questions.pop(session_id, None) if session_id not in self._turns else None
        )

    def submit_execution(self, execution_id: uuid.UUID) -> None:
        task = self.registry.spawn(self.jobs.run_execution(execution_id), name=f"execution-{execution_id}")
        self._track(self._executions, execution_id, task)

    def warm_agent(self, session_id: uuid.UUID) -> None:
        if self.agents is not None and not self.draining:
            self.registry.spawn(self.jobs.warm_agent(session_id), name=f"warm-{session_id}")

    def start_schedules(self, interval_s: float) -> None:
        self.registry.spawn(self._tick_forever(interval_s), name="task-scheduler")

    async def _tick_forever(self, interval_s: float) -> None:
        while not self.draining:
            try:
                await self.jobs.tick_schedules()
            except Exception:
                log.exception("schedule tick failed")
            await asyncio.sleep(interval_s)

    def start_deliveries(self, idle_s: float) -> None:
        if self.jobs.deliver_webhooks is not None:
            self.registry.spawn(self._deliver_forever(self.jobs.deliver_webhooks, idle_s), name="webhook-deliveries")

    def wake_deliveries(self) -> None:
        self._deliveries_due.set()

    async def _deliver_forever(self, deliver: Callable[[], Coroutine[Any, Any, float | None]], idle_s: float) -> None:
        while not self.draining:
            self._deliveries_due.clear()
            try:
                next_due_s = await deliver()
            except Exception:
                log.exception("webhook delivery pass failed")
                next_due_s = idle_s
            wait_s = idle_s if next_due_s is None else min(next_due_s, idle_s)
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._deliveries_due.wait(), wait_s)

    async def wait_turn(self, session_id: uuid.UUID, timeout: float | None) -> bool:  # noqa: ASYNC109
        task = self._turns.get(session_id)
        if task is None:
            return True
        # Shielded: a caller that stops waiting does not cancel the turn.
        done, _ = await asyncio.wait({asyncio.ensure_future(asyncio.shield(task))}, timeout=timeout)
        return bool(done)

    async def wait_turn_or_question(
        self,
        session_id: uuid.UUID,
        timeout: float | None,  # noqa: ASYNC109
    ) -> Literal["finished", "question", "timeout"]:
        task = self._turns.get(session_id)
        if task is None:
            return "finished"
        question = self._questions.setdefault(session_id, asyncio.Event())
        if question.is_set():
            return "question"
        asked: asyncio.Future[Any] = asyncio.ensure_future(question.wait())
        finished: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(task))
        try:
            done, _ = await asyncio.wait({asked, finished}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            asked.cancel()
            finished.cancel()  # the shield's outer future only: the turn goes on
        if finished in done:
            return "finished"
        return "question" if asked in done else "timeout"

    async def interrupt(self, session_id: uuid.UUID) -> bool:
        if self.agents is not None and await self.agents.interrupt(session_id):
            return True
        if session_id in self._turns:
            self._interrupts.add(session_id)
            return True
        return False

    def take_interrupt(self, session_id: uuid.UUID) -> bool:
        if session_id in self._interrupts:
            self._interrupts.discard(session_id)
            return True
        return False

    async def stop_agent(self, session_id: uuid.UUID) -> None:
        await self.interrupt(session_id)
        for request_id, (owner, _waiter) in list(self._waiters.items()):
            if owner == session_id:
                self.answer_permission(request_id, "deny", "the session was stopped")
        if self.agents is not None:
            await self.agents.close(session_id)

    async def cancel_execution(self, execution_id: uuid.UUID, session_id: uuid.UUID | None) -> None:
        # Without a session yet, the execution sees the cancel on its row once its turn is set up.
        if session_id is not None:
            await self.interrupt(session_id)

    async def wait_permission(
        self,
        request_id: uuid.UUID,
        session_id: uuid.UUID,
        timeout: float,  # noqa: ASYNC109
    ) -> Answer | None:
        if request_id not in self._waiters:
            self.expect_permission(request_id, session_id)
        waiter = self._waiters[request_id][1]
        self._questions.setdefault(session_id, asyncio.Event()).set()
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(request_id, None)
            if not any(owner == session_id for owner, _ in self._waiters.values()):
                if session_id in self._turns:
                    self._questions[session_id].clear()
                else:
                    self._questions.pop(session_id, None)

    def expect_permission(self, request_id: uuid.UUID, session_id: uuid.UUID) -> None:
        self._waiters[request_id] = (session_id, asyncio.get_running_loop().create_future())

    def discard_permission(self, request_id: uuid.UUID) -> None:
        self._waiters.pop(request_id, None)

    def answer_permission(self, request_id: uuid.UUID, decision: str, reason: str | None) -> bool:
        entry = self._waiters.get(request_id)
        if entry is None or entry[1].done():
            return False
        entry[1].set_result((decision, reason))
        return True

    def running_turns(self) -> int:
        return len(self._turns)

    def runs_execution(self, execution_id: uuid.UUID) -> bool:
        return execution_id in self._executions

    async def drain(self, timeout: float = DRAIN_TURNS_S) -> None:  # noqa: ASYNC109
        self.draining = True
        if self.agents is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interrupted: set[asyncio.Task[None]] = set()
        # Again while turns remain: one whose request passed the check just before the drain began is submitted
        # after it (see `submit_turn`), and is interrupted and waited for like the others.
        while self._turns and (left := deadline - loop.time()) > 0:
            for session_id, task in list(self._turns.items()):
                if task not in interrupted:
                    interrupted.add(task)
                    with contextlib.suppress(Exception):
                        await self.interrupt(session_id)
            await asyncio.wait(list(self._turns.values()), timeout=left, return_when=asyncio.FIRST_COMPLETED)
        # Closing an agent also cancels the permission wait of a turn still asking, which settles it `cancelled`.
        await self.agents.close_all()
