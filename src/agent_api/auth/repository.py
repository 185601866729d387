"""Queries for users, refresh-token families and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import ApiKey, RefreshTokenFamily, User


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def find_user_by_login(session: AsyncSession, login: str) -> User | None:
    """`login` is a username or an email address (emails are stored lower-case)."""
    stmt = select(User).where((User.username == login) | (User.email == login.lower()))
    return (await session.scalars(stmt.limit(1))).first()


async def username_taken(session: AsyncSession, username: str) -> bool:
    return await session.scalar(select(func.count()).where(User.username == username)) != 0


async def email_taken(session: AsyncSession, email: str) -> bool:
    return await session.scalar(select(func.count()).where(User.email == email)) != 0


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


def users_ordered() -> Select[User]:
    return select(User).order_by(User.created_at, User.username)


async def get_family(session: AsyncSession, family_id: uuid.UUID) -> RefreshTokenFamily | None:
    return await session.get(RefreshTokenFamily, family_id)


async def user_with_live_family(session: AsyncSession, user_id: uuid.UUID, family_id: uuid.UUID) -> User | None:
    stmt = (
        select(User)
        .join(RefreshTokenFamily, RefreshTokenFamily.user_id == User.id)
        .where(User.id == user_id, RefreshTokenFamily.id == family_id, RefreshTokenFamily.revoked_at.is_(None))
    )
    return (await session.scalars(stmt)).first()


async def revoke_families_of(session: AsyncSession, user_id: uuid.UUID, when: datetime, reason: str) -> int:
    result = await session.execute(
        update(RefreshTokenFamily)
        .where(RefreshTokenFamily.user_id == user_id, RefreshTokenFamily.revoked_at.is_(None))
        .values(revoked_at=when, revoked_reason=reason)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def api_key_with_user(session: AsyncSession, key_hash: str) -> tuple[ApiKey, User] | None:
    stmt = select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == key_hash)
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


def api_keys_of(user_id: uuid.UUID) -> Select[ApiKey]:
    return select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at, ApiKey.id)


async def get_api_key_of(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    return (await session.scalars(api_keys_of(user_id).where(ApiKey.id == key_id))).first()


async def touch_api_key(session: AsyncSession, key_id: uuid.UUID, when: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
