"""The pool of live agents: start in the background, reuse between turns, close idle ones, cap how many live.

It also keeps a few spare agents: processes started ahead, with the options most sessions have, under the id of a
session that does not exist yet. A new session whose options match takes one (and its id), so even a first message
sent the moment the session is created finds its agent started.

Each user may hold at most `max_live_per_user` live agents, so one user cannot take every slot: a turn beyond it
waits until one of that user's agents is idle (and is closed for it), never evicting another user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from agent_api.runtime.agent import AgentSpec, LiveAgent, RuntimeConfig, TurnObserver, start_options

if TYPE_CHECKING:
    from claude_agent_sdk import ResultMessage  # the SDK is imported with the first agent (`runtime.agent`)

log = logging.getLogger("agent_api.runtime")


class AgentPool:
    def __init__(
        self,
        config: RuntimeConfig,
        *,
        max_live: int = 20,
        idle_timeout_s: float = 300.0,
        spares: int = 0,
        spare_spec: Callable[[], AgentSpec] | None = None,
        max_live_per_user: int = 0,
    ) -> None:
        self.config = config
        self.max_live = max_live
        self.max_live_per_user = max_live_per_user  # 0: no cap per user
        # Sessions whose turn holds its owner's slot, from the wait for it to the turn's end: never evicted.
        self._reserved: dict[uuid.UUID, tuple[uuid.UUID, object]] = {}
        self._slot_freed = asyncio.Event()
        self.idle_timeout_s = idle_timeout_s
        self._agents: OrderedDict[uuid.UUID, LiveAgent] = OrderedDict()
        # `spare_spec` makes the spec of a future session (a fresh id, its working directory created).
        self.spares_wanted = spares if spare_spec is not None else 0
        self._spare_spec = spare_spec
        self._spares: list[LiveAgent] = []
        # Claimed spares whose session has not asked for its agent yet: their spec is still the generic one.
        self._unadopted: set[uuid.UUID] = set()
        self._reaper: asyncio.Task[None] | None = None
        # Evicted agents closing in the background, held so they are not garbage-collected mid-close.
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return sum(1 for a in self._agents.values() if a.alive)

    def is_live(self, session_id: uuid.UUID) -> bool:
        agent = self._agents.get(session_id)
        return agent is not None and agent.alive

    def is_busy(self, session_id: uuid.UUID) -> bool:
        agent = self._agents.get(session_id)
        return agent is not None and agent.alive and agent.busy

    def start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="agent-pool-reaper")

    @property
    def spare_count(self) -> int:
        return sum(1 for a in self._spares if a.alive)

    def start_spares(self) -> None:
        """Start spare agents up to the number wanted, within the cap on live processes."""
        self._spares = [a for a in self._spares if a.alive]
        while self._spare_spec is not None and len(self._spares) < self.spares_wanted:
            if len(self) + len(self._spares) >= self.max_live:
                return
            self._spares.append(LiveAgent(self._spare_spec(), self.config))

    def claim_spare(self, spec: AgentSpec) -> uuid.UUID | None:
        """For a session about to be created with `spec`: the id of a spare agent started with the same options,
        which the session must take as its own id; None when no spare fits. Another is started in its place."""
        wanted = start_options(spec, with_cwd=False)
        if (
            self.max_live_per_user
            and spec.owner is not None
            and len(self._held_by(spec.owner)) >= self.max_live_per_user
        ):
            return None  # the owner holds as many agents as allowed: this session's starts with its first turn
        for agent in self._spares:
            if agent.alive and start_options(agent.spec, with_cwd=False) == wanted:
                self._spares.remove(agent)
                agent.spec.owner = spec.owner
                agent.last_used = time.monotonic()  # not idle: its session is being created
                self._agents[agent.spec.session_id] = agent
                self._unadopted.add(agent.spec.session_id)
                self.start_spares()
                return agent.spec.session_id
        return None

    def warm(self, spec: AgentSpec) -> LiveAgent:
        """The session's live agent, starting its process in the background when there is none."""
        agent = self._agents.get(spec.session_id)
        if spec.session_id in self._unadopted and agent is not None:
            self._unadopted.discard(spec.session_id)
            if start_options(agent.spec) == start_options(spec):
                # The process was started with these very options; the rest of the spec (rules, mode, blocked
                # commands) is read by our hooks, so from now on they read the session's own.
                agent.spec = spec
            else:
                self._agents.pop(spec.session_id)
                self._close_in_background(agent)
                agent = None
        if agent is not None and agent.alive:
            self._agents.move_to_end(spec.session_id)
            return agent
        dead = self._agents.pop(spec.session_id, None)
        if dead is not None:
            self._close_in_background(dead)  # its owning task may still wait for a turn
        self._evict_for_owner(spec)
        self._evict_for_room()
        agent = LiveAgent(spec, self.config)
        self._agents[spec.session_id] = agent
        return agent

    async def run_turn(
        self, spec: AgentSpec, prompt: str, observer: TurnObserver
    ) -> tuple[ResultMessage | None, LiveAgent]:
        agent = self.warm(spec)
        try:
            result = await agent.run(prompt, observer)
        except Exception:
            # Whatever broke, the next turn starts a fresh process (resuming the conversation).
            self._agents.pop(spec.session_id, None)
            await agent.close()
            raise
        finally:
            self._notify_slot_freed()
        return result, agent

    def _held_by(self, owner: uuid.UUID) -> set[uuid.UUID]:
        live = {sid for sid, a in self._agents.items() if a.alive and a.spec.owner == owner}
        return live | {sid for sid, (o, _) in self._reserved.items() if o == owner}

    def _in_use_by(self, owner: uuid.UUID) -> set[uuid.UUID]:
        """The owner's sessions whose agent runs a turn or is held for one (idle agents can always be closed)."""
        busy = {sid for sid, a in self._agents.items() if a.alive and a.busy and a.spec.owner == owner}
        return busy | {sid for sid, (o, _) in self._reserved.items() if o == owner}

    def _idle(self, session_id: uuid.UUID) -> bool:
        agent = self._agents.get(session_id)
        return agent is not None and not agent.busy and session_id not in self._reserved

    def user_slot_free(self, owner: uuid.UUID | None, session_id: uuid.UUID) -> bool:
        """Whether a turn of the session may start now within its owner's cap: fewer of the owner's other sessions
        than the cap run a turn or hold a slot for one (the owner's idle agents are closed to make room)."""
        if not self.max_live_per_user or owner is None:
            return True
        return len(self._in_use_by(owner) - {session_id}) < self.max_live_per_user

    @contextlib.asynccontextmanager
    async def user_slot(self, spec: AgentSpec) -> AsyncIterator[None]:
        """Hold a slot of the owner's for the session's turn, waiting until one is free."""
        while not self.user_slot_free(spec.owner, spec.session_id):
            # Woken when a turn ends or an agent closes; the timeout also covers an agent whose process died.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), 1.0)
        # Taken and made room for with no await in between, so concurrent waiters of one owner cannot all pass.
        token = object()
        if spec.owner is not None:
            self._reserved[spec.session_id] = (spec.owner, token)
            self._evict_for_owner(spec)
        try:
            yield
        finally:
            if self._reserved.get(spec.session_id, (None, None))[1] is token:
                del self._reserved[spec.session_id]
            self._notify_slot_freed()

    def _notify_slot_freed(self) -> None:
        self._slot_freed.set()
        self._slot_freed = asyncio.Event()

    def _evict_for_owner(self, spec: AgentSpec) -> None:
        """Close the owner's least recently used idle agents until this session's fits within the owner's cap."""
        if not self.max_live_per_user or spec.owner is None:
            return
        held = self._held_by(spec.owner) - {spec.session_id}
        for sid in [sid for sid in self._agents if sid in held]:  # oldest use first
            if len(held) < self.max_live_per_user:
                return
            if self._idle(sid):
                self._close_in_background(self._agents.pop(sid))
                self._unadopted.discard(sid)
                held.discard(sid)

    async def interrupt(self, session_id: uuid.UUID) -> bool:
        agent = self._agents.get(session_id)
        if agent is None or not agent.busy:
            return False
        await agent.interrupt()
        return True

    async def close(self, session_id: uuid.UUID) -> None:
        self._unadopted.discard(session_id)
        agent = self._agents.pop(session_id, None)
        if agent is not None:
            await agent.close()
            self._notify_slot_freed()

    async def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(BaseException):
                await self._reaper
            self._reaper = None
        self.spares_wanted = 0
        agents = list(self._agents.values()) + self._spares
        self._agents.clear()
        self._spares.clear()
        await asyncio.gather(*(a.close() for a in agents), *self._closing, return_exceptions=True)

    def _evict_for_room(self) -> None:
        live = [sid for sid, a in self._agents.items() if a.alive]
        excess = len(live) + len(self._spares) - self.max_live + 1
        while excess > 0 and self._spares:  # a spare goes before any session's agent
            self._close_in_background(self._spares.pop())
            excess -= 1
        for sid in live:  # oldest use first
            if excess <= 0:
                break
            agent = self._agents[sid]
            if agent.busy or sid in self._reserved:
                continue
            self._agents.pop(sid)
            self._close_in_background(agent)
            excess -= 1

    def _close_in_background(self, agent: LiveAgent) -> None:
        task = asyncio.create_task(agent.close(), name=f"close-{agent.spec.session_id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        self._notify_slot_freed()

    async def close_idle(self) -> int:
        def still_idle(sid: uuid.UUID) -> bool:
            agent = self._agents.get(sid)
            stale = agent is not None and time.monotonic() - agent.last_used >= self.idle_timeout_s
            return stale and self._idle(sid)

        closed = 0
        for sid in [sid for sid in self._agents if still_idle(sid)]:
            if still_idle(sid):  # each close takes a while: a turn may have taken the agent meanwhile
                await self.close(sid)
                closed += 1
        self.start_spares()  # replaces a spare that died, and one given up for room once there is room again
        return closed

    async def _reap_forever(self) -> None:
        while True:
            # Read each round, so a changed timeout applies without a restart.
            await asyncio.sleep(max(0.05, min(self.idle_timeout_s / 4, 1.0)))
            try:
                await self.close_idle()
            except Exception:
                log.exception("closing idle agents failed")
