"""Queries for users, refresh-token families and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.auth_cache import AUTH_NEUTRAL
from agent_api.models import ApiKey, DownloadTicket, RefreshTokenFamily, User


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


async def get_family(session: AsyncSession, family_id: uuid.UUID, *, fresh: bool = False) -> RefreshTokenFamily | None:
    """The family; `fresh` reads the row again even when this session holds it already."""
    return await session.get(RefreshTokenFamily, family_id, populate_existing=fresh)


async def rotate_family(
    session: AsyncSession, family_id: uuid.UUID, presented_jti: str, new_jti: str, now: datetime, expires_at: datetime
) -> bool:
    """Make `new_jti` the family's current token if `presented_jti` still is; False when another refresh won.

    A compare-and-set, so two refreshes with the same token can never both rotate (on PostgreSQL the second waits
    for the first's row lock, then finds the token no longer current)."""
    result = await session.execute(
        update(RefreshTokenFamily)
        .where(
            RefreshTokenFamily.id == family_id,
            RefreshTokenFamily.current_jti == presented_jti,
            RefreshTokenFamily.revoked_at.is_(None),
        )
        .values(current_jti=new_jti, previous_jti=presented_jti, last_refreshed_at=now, expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


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
    # Neutral to the auth cache: when a key was last used changes nothing about whether it is valid.
    stmt = update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when)
    await session.execute(stmt.execution_options(**{AUTH_NEUTRAL: True}))


async def delete_expired_download_tickets(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        delete(DownloadTicket).where(DownloadTicket.user_id == user_id, DownloadTicket.expires_at <= now)
    )


async def redeem_download_ticket(
    session: AsyncSession, ticket_hash: str, target: str, now: datetime
) -> uuid.UUID | None:
    """Mark an unused, unexpired ticket for exactly this target used; its user's id, or None."""
    claimed = await session.execute(
        update(DownloadTicket)
        .where(
            DownloadTicket.ticket_hash == ticket_hash,
            DownloadTicket.target == target,
            DownloadTicket.used_at.is_(None),
            DownloadTicket.expires_at > now,
        )
        .values(used_at=now)
        .returning(DownloadTicket.user_id)
        .execution_options(synchronize_session=False)
    )
    user_id = claimed.scalar()
    return uuid.UUID(str(user_id)) if user_id is not None else None
