"""The dispatcher: work starts only after its transaction commits, interrupts reach turns not yet started,
permission answers are checked against the database row, and a drain ends running turns on the record."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from agent_api.app import create_app
from agent_api.background import TaskRegistry
from agent_api.db import after_commit
from agent_api.dispatcher import InProcessDispatcher, Jobs
from agent_api.models import Turn, User
from agent_api.sessions import service as sessions_service
from tests.conftest import SessionsApi, Users, app_state, assert_error_shape, make_client, make_settings, wait_until


class Recorder:
    """Job functions that only note what they were asked to run (the dispatcher's own behaviour is under test)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, tuple[uuid.UUID, ...]]] = []
        self.gate = asyncio.Event()
        self.saw_interrupt: bool | None = None
        self.dispatcher: InProcessDispatcher | None = None

    async def run_turn(self, session_id: uuid.UUID, turn_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.runs.append(("turn", (session_id, turn_id, user_id)))
        await self.gate.wait()
        assert self.dispatcher is not None
        self.saw_interrupt = self.dispatcher.take_interrupt(session_id)

    async def run_execution(self, execution_id: uuid.UUID) -> None:
        self.runs.append(("execution", (execution_id,)))

    async def warm_agent(self, session_id: uuid.UUID) -> None:
        self.runs.append(("warm", (session_id,)))

    async def tick_schedules(self) -> None:
        self.runs.append(("tick", ()))
        if sum(1 for kind, _ in self.runs if kind == "tick") == 2:
            raise RuntimeError("a failing tick does not stop the next")

    def dispatcher_for(self) -> InProcessDispatcher:
        jobs = Jobs(
            run_turn=self.run_turn,
            run_execution=self.run_execution,
            warm_agent=self.warm_agent,
            tick_schedules=self.tick_schedules,
        )
        self.dispatcher = InProcessDispatcher(jobs, agents=None, registry=TaskRegistry())
        return self.dispatcher


class TestAfterCommit:
    async def test_work_queued_in_a_rolled_back_transaction_never_runs(self, app: object) -> None:
        started: list[str] = []
        with pytest.raises(RuntimeError):
            async with app_state(app).db.transaction() as db:
                after_commit(db, lambda: started.append("rolled back"))
                raise RuntimeError("the request failed")
        async with app_state(app).db.transaction() as db:
            after_commit(db, lambda: started.append("committed"))
            assert started == []  # not before the commit
        assert started == ["committed"]

    async def test_savepoints_neither_start_work_early_nor_keep_what_they_rolled_back(self, app: object) -> None:
        started: list[str] = []
        with pytest.raises(RuntimeError):
            async with app_state(app).db.transaction() as db:
                after_commit(db, lambda: started.append("before the savepoint"))
                async with db.begin_nested():
                    pass  # released: not the transaction's commit
                assert started == []
                raise RuntimeError("the transaction itself fails")
        assert started == []
        async with app_state(app).db.transaction() as db:
            after_commit(db, lambda: started.append("kept"))
            with pytest.raises(ValueError):
                async with db.begin_nested():
                    after_commit(db, lambda: started.append("rolled back with its savepoint"))
                    raise ValueError
            async with db.begin_nested():
                after_commit(db, lambda: started.append("released savepoint"))
        assert started == ["kept", "released savepoint"]

    async def test_a_turn_whose_transaction_rolls_back_is_not_run(self, app: object, sessions: SessionsApi) -> None:
        state = app_state(app)
        s = await sessions.create(permission_mode="bypassPermissions")
        user_id = uuid.UUID(sessions.user.id)
        turn_id: uuid.UUID | None = None
        with pytest.raises(RuntimeError):
            async with state.db.transaction() as db:
                user = await db.get(User, user_id)
                row = await sessions_service.get_session(db, uuid.UUID(s["id"]))
                assert user is not None and row is not None
                sent = await sessions_service.send_message(db, state, user, row, "never sent")
                turn_id = sent.turn.id
                raise RuntimeError("rolled back after the turn was recorded")
        assert turn_id is not None
        assert state.dispatcher.running_turns() == 0
        async with state.db.transaction(readonly=True) as db:
            assert await db.get(Turn, turn_id) is None
        assert (await sessions.get(s["id"]))["turn_count"] == 0


class TestInterrupts:
    async def test_an_interrupt_reaches_a_turn_not_yet_started(self) -> None:
        jobs = Recorder()
        dispatcher = jobs.dispatcher_for()
        session_id, turn_id, user_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        assert await dispatcher.interrupt(session_id) is False  # nothing running
        dispatcher.submit_turn(session_id, turn_id, user_id)
        assert dispatcher.running_turns() == 1
        assert await dispatcher.interrupt(session_id) is True
        jobs.gate.set()
        assert await dispatcher.wait_turn(session_id, 5) is True
        assert jobs.saw_interrupt is True
        assert dispatcher.running_turns() == 0

    async def test_an_interrupt_for_an_earlier_turn_is_spent(self) -> None:
        jobs = Recorder()
        dispatcher = jobs.dispatcher_for()
        session_id = uuid.uuid4()
        dispatcher.submit_turn(session_id, uuid.uuid4(), uuid.uuid4())
        await dispatcher.interrupt(session_id)
        dispatcher.submit_turn(session_id, uuid.uuid4(), uuid.uuid4())  # the next turn starts clean
        jobs.gate.set()
        await dispatcher.wait_turn(session_id, 5)
        assert jobs.saw_interrupt is False

    async def test_a_turn_committed_as_the_drain_began_only_records_itself_interrupted(self) -> None:
        """Its request passed the `draining` check just before the drain; it reaches the dispatcher after."""
        jobs = Recorder()
        dispatcher = jobs.dispatcher_for()
        dispatcher.draining = True
        session_id = uuid.uuid4()
        dispatcher.submit_turn(session_id, uuid.uuid4(), uuid.uuid4())
        jobs.gate.set()
        assert await dispatcher.wait_turn(session_id, 5) is True
        assert jobs.saw_interrupt is True


class TestSchedules:
    async def test_ticks_repeat_and_survive_a_failure_until_the_drain(self) -> None:
        jobs = Recorder()
        dispatcher = jobs.dispatcher_for()
        dispatcher.start_schedules(0.01)

        async def three_ticks() -> bool:
            return sum(1 for kind, _ in jobs.runs if kind == "tick") >= 3

        await wait_until(three_ticks, timeout=5)
        await dispatcher.drain()
        await dispatcher.registry.cancel_all()


class TestPermissionAnswers:
    async def test_unknown_and_settled_requests(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        url = f"/api/v1/sessions/{s['id']}/permissions/{uuid.uuid4()}"
        r = await client.post(url, json={"decision": "allow"}, headers=sessions.user.headers)
        assert_error_shape(r, 404, "permission_request_not_found")

    @pytest.mark.slow
    async def test_a_decided_request_cannot_be_answered_again(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="default")
        r = await sessions.query(s["id"], "write notes.txt: hello", wait=False)
        assert r.status_code == 202
        await sessions.wait_status(s["id"], "waiting")
        pending = [p for p in await sessions.items(s["id"], "permissions") if p["decision"] is None]
        assert len(pending) == 1
        url = f"/api/v1/sessions/{s['id']}/permissions/{pending[0]['id']}"
        first = await client.post(url, json={"decision": "allow"}, headers=sessions.user.headers)
        assert first.status_code == 200, first.text
        again = await client.post(url, json={"decision": "deny"}, headers=sessions.user.headers)
        assert_error_shape(again, 409, "permission_already_decided")
        await sessions.wait_status(s["id"], "active")
        assert any(
            c["name"] == "Write" and c["status"] == "completed" for c in await sessions.items(s["id"], "tool-calls")
        )

    async def test_an_answer_that_comes_before_the_wait_is_not_missed(self) -> None:
        """The request is streamed when it commits; a quick client can answer before the turn starts waiting."""
        dispatcher = Recorder().dispatcher_for()
        request_id, session_id = uuid.uuid4(), uuid.uuid4()
        dispatcher.expect_permission(request_id, session_id)
        assert dispatcher.answer_permission(request_id, "allow", "at once") is True
        assert await dispatcher.wait_permission(request_id, session_id, 5) == ("allow", "at once")
        assert dispatcher._waiters == {} and dispatcher._questions == {}  # nothing left behind

    async def test_an_answer_nobody_waits_for_is_reported(self) -> None:
        dispatcher = Recorder().dispatcher_for()
        assert dispatcher.answer_permission(uuid.uuid4(), "allow", None) is False
        request_id, session_id = uuid.uuid4(), uuid.uuid4()
        waiting = asyncio.ensure_future(dispatcher.wait_permission(request_id, session_id, 5))
        await asyncio.sleep(0)
        assert dispatcher.answer_permission(request_id, "deny", "no") is True
        assert await waiting == ("deny", "no")
        assert await dispatcher.wait_permission(uuid.uuid4(), session_id, 0.01) is None  # timed out


@pytest.mark.slow
async def test_drain_interrupts_running_turns_and_records_them(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On its own application: a drained one takes no more work."""
    application = create_app(make_settings(tmp_path_factory.mktemp("data"), database_url))
    async with application.router.lifespan_context(application), make_client(application) as client:
        owner = await Users(application, client).create()
        api = SessionsApi(client, owner)
        s = await api.create(permission_mode="bypassPermissions")
        r = await api.query(s["id"], "sleep: 60", wait=False)
        assert r.status_code == 202
        turn_id = r.json()["turn_id"]

        async def prompt_taken() -> bool:
            return any(h["event"] == "UserPromptSubmit" for h in await api.items(s["id"], "hooks"))

        await wait_until(prompt_taken)
        state = app_state(application)
        await state.dispatcher.drain()
        assert state.dispatcher.running_turns() == 0
        async with state.db.transaction(readonly=True) as db:
            turn = await db.get(Turn, uuid.UUID(turn_id))
            assert turn is not None and turn.status == "interrupted"
        assert (await api.get(s["id"]))["status"] == "active"
        refused = await api.query(s["id"], "after the drain", wait=False)
        assert_error_shape(refused, 503, "shutting_down")
