"""Report helpers: sessions with a recorded history made by a small factory (no agent process), and the report routes."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from agent_api.models import Message, Session, ToolCall, Turn, User
from agent_api.models.base import utcnow
from agent_api.sessions import service as sessions_service
from agent_api.sessions.schemas import SessionCreate
from tests.conftest import UserAccount, app_state


def published_schema() -> dict[str, Any]:
    text = resources.files("agent_api.reports").joinpath("report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


_formats = jsonschema.FormatChecker()


# jsonschema checks "date-time" only with an optional package installed; the timestamps are checked here instead.
@_formats.checks("date-time", raises=ValueError)
def _is_utc_timestamp(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).utcoffset() == timedelta(0)


def validate_report_json(document: Any) -> None:
    jsonschema.Draft202012Validator(published_schema(), format_checker=_formats).validate(document)


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    output: Any = None
    is_error: bool = False


@dataclass
class History:
    prompt: str = "do the thing"
    answer: str | None = "done"
    tools: list[ToolUse] = field(default_factory=list)
    is_error: bool = False
    errors: list[str] | None = None
    status: str = "completed"
    cost_usd: float = 0.0125
    input_tokens: int = 120
    output_tokens: int = 45
    duration_ms: int = 1500


class Factory:
    """Sessions made through the sessions service (so no agent starts) with turns written as the recorder would."""

    def __init__(self, application: object) -> None:
        self.app = application

    @property
    def state(self) -> Any:
        return app_state(self.app)

    async def session(self, owner: UserAccount, name: str | None = "report test") -> uuid.UUID:
        async with self.state.db.transaction() as db:
            user = await db.get(User, uuid.UUID(owner.id))
            created = await sessions_service.create_session(db, self.state, user, SessionCreate(name=name))
            return created.session.id

    def workdir(self, session_id: uuid.UUID) -> Path:
        return sessions_service.workdir_of(self.state, session_id)

    async def turn(self, session_id: uuid.UUID, history: History) -> None:
        start = utcnow()
        async with self.state.db.transaction() as db:
            s = await db.get(Session, session_id)
            assert s is not None
            turn = Turn(
                id=uuid.uuid4(),
                session_id=s.id,
                user_id=s.user_id,
                prompt=history.prompt,
                status=history.status,
                result=history.answer,
                is_error=history.is_error,
                errors=history.errors,
                cost_usd=history.cost_usd,
                duration_ms=history.duration_ms,
                input_tokens=history.input_tokens,
                output_tokens=history.output_tokens,
                created_at=start,
                started_at=start,
                finished_at=start + timedelta(milliseconds=history.duration_ms),
            )
            db.add(turn)
            await db.flush()
            at = start
            db.add(Message(session_id=s.id, turn_id=turn.id, role="user", text=history.prompt, created_at=at))
            for n, use in enumerate(history.tools):
                at += timedelta(milliseconds=10)
                db.add(
                    ToolCall(
                        session_id=s.id,
                        turn_id=turn.id,
                        tool_use_id=f"toolu_{uuid.uuid4().hex[:12]}_{n}",
                        name=use.name,
                        input=use.input,
                        output=use.output,
                        is_error=use.is_error,
                        status="failed" if use.is_error else "completed",
                        started_at=at,
                        finished_at=at + timedelta(milliseconds=5),
                        duration_ms=5,
                    )
                )
            if history.answer is not None:
                at += timedelta(milliseconds=10)
                db.add(Message(session_id=s.id, turn_id=turn.id, role="assistant", text=history.answer, created_at=at))
            s.status = "active" if history.status == "completed" else "failed"
            s.turn_count += 1
            s.message_count += 2 if history.answer is not None else 1
            s.tool_call_count += len(history.tools)
            s.total_cost_usd = float(s.total_cost_usd or 0) + history.cost_usd
            s.total_input_tokens += history.input_tokens
            s.total_output_tokens += history.output_tokens


@pytest.fixture
def factory(app: object) -> Factory:
    return Factory(app)


class ReportsApi:
    def __init__(self, client: httpx.AsyncClient, user: UserAccount) -> None:
        self.client = client
        self.user = user

    async def create(self, session_id: uuid.UUID | str, **body: Any) -> dict[str, Any]:
        r = await self.client.post(
            f"/api/v1/sessions/{session_id}/report", json=body or None, headers=self.user.headers
        )
        assert r.status_code == 201, r.text
        return r.json()

    async def list(self, **params: Any) -> dict[str, Any]:
        r = await self.client.get("/api/v1/reports", params=params, headers=self.user.headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def download(self, report_id: str, fmt: str) -> httpx.Response:
        return await self.client.get(
            f"/api/v1/reports/{report_id}/download", params={"format": fmt}, headers=self.user.headers
        )


@pytest.fixture
def reports(client: httpx.AsyncClient, owner: UserAccount) -> ReportsApi:
    return ReportsApi(client, owner)
