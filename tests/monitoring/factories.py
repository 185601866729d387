"""Rows written straight to the database, for figures that must add up exactly without running agents."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from agent_api.models import Session, ToolCall, Turn, User
from agent_api.models.base import utcnow
from agent_api.runtime import workdir
from agent_api.sessions.service import workdir_of
from tests.conftest import app_state


async def add_session(app: object, user_id: str, *, name: str = "s", status: str = "active", **fields: Any) -> str:
    state = app_state(app)
    async with state.db.transaction() as db:
        s = Session(id=uuid.uuid4(), user_id=uuid.UUID(user_id), name=name, status=status, **fields)
        db.add(s)
    workdir.create_workdir(workdir_of(state, s.id))
    return str(s.id)


async def add_turn(
    app: object,
    session_id: str,
    user_id: str,
    cost: float,
    *,
    at: datetime | None = None,
    input_tokens: int = 10,
    output_tokens: int = 5,
    model_usage: dict[str, Any] | None = None,
    status: str = "completed",
    duration_ms: int | None = 100,
    tools: list[tuple[str, int]] | None = None,
) -> str:
    """A finished turn costing `cost`, created at `at`, with tool calls (name, duration ms) and session totals."""
    when = at or utcnow()
    async with app_state(app).db.transaction() as db:
        turn = Turn(
            id=uuid.uuid4(),
            session_id=uuid.UUID(session_id),
            user_id=uuid.UUID(user_id),
            prompt="p",
            status=status,
            cost_usd=cost,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model_usage=model_usage,
            duration_ms=duration_ms,
            created_at=when,
            started_at=when,
            finished_at=when + timedelta(milliseconds=duration_ms or 0) if status != "running" else None,
        )
        db.add(turn)
        await db.flush()
        for i, (name, ms) in enumerate(tools or []):
            db.add(
                ToolCall(
                    session_id=turn.session_id,
                    turn_id=turn.id,
                    tool_use_id=f"toolu_{uuid.uuid4().hex}",
                    name=name,
                    status="completed",
                    started_at=when + timedelta(milliseconds=i),
                    finished_at=when + timedelta(milliseconds=i + ms),
                    duration_ms=ms,
                )
            )
        s = await db.get(Session, turn.session_id)
        assert s is not None
        s.total_cost_usd = float(s.total_cost_usd or 0) + cost
        s.turn_count += 1
        s.tool_call_count += len(tools or [])
    return str(turn.id)


async def set_budget(app: object, user_id: str, budget: float | None) -> None:
    async with app_state(app).db.transaction() as db:
        user = await db.get(User, uuid.UUID(user_id))
        assert user is not None
        user.monthly_budget_usd = budget
