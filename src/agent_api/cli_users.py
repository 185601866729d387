"""User commands of the CLI, run against the configured database through the same service as the API."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from agent_api import migrate
from agent_api.auth import repository as repo
from agent_api.auth import service
from agent_api.auth.schemas import Email, Password, Username
from agent_api.config import get_settings
from agent_api.db import Database
from agent_api.errors import AppError


def _check(adapter_type: Any, value: str, what: str) -> str:
    try:
        return str(TypeAdapter(adapter_type).validate_python(value))
    except ValidationError as exc:
        raise ValueError(f"invalid {what}: {exc.errors()[0]['msg']}") from exc


def _database() -> Database:
    settings = get_settings()
    settings.ensure_data_dir()
    migrate.upgrade(settings.resolved_database_url)
    return Database(settings.resolved_database_url, busy_timeout_ms=settings.db_busy_timeout_ms)


async def create_user(username: str, password: str, email: str | None, admin: bool) -> dict[str, Any]:
    username = _check(Username, username, "username")
    password = _check(Password, password, "password")
    email = _check(Email, email, "email") if email else None
    db = _database()
    try:
        async with db.transaction() as session:
            user = await service.create_user(session, username, password, email, admin=admin)
            return {"id": str(user.id), "username": user.username, "role": user.role}
    except AppError as exc:
        raise ValueError(exc.message) from exc
    finally:
        await db.dispose()


async def list_users() -> list[dict[str, Any]]:
    db = _database()
    try:
        async with db.transaction(readonly=True) as session:
            users = (await session.scalars(repo.users_ordered())).all()
            return [
                {
                    "id": str(u.id),
                    "username": u.username,
                    "email": u.email,
                    "role": u.role,
                    "is_active": u.is_active,
                    "created_at": u.created_at.isoformat(timespec="seconds"),
                }
                for u in users
            ]
    finally:
        await db.dispose()
