"""Users and their credentials: refresh-token families and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from agent_api.models.base import Base, IdMixin, TimestampMixin, utcnow

ROLE_ADMIN = "admin"
ROLE_USER = "user"


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=ROLE_USER)
    is_active: Mapped[bool] = mapped_column(default=True)
    last_login_at: Mapped[datetime | None]
    total_cost_usd: Mapped[float] = mapped_column(Numeric(14, 6, asdecimal=False), default=0)
    total_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # USD per calendar month (UTC); None falls back to the configured default, and None there means unlimited.
    monthly_budget_usd: Mapped[float | None] = mapped_column(Numeric(14, 6, asdecimal=False))

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN


class RefreshTokenFamily(IdMixin, Base):
    """One login: every refresh token rotated from it, and the access tokens issued alongside.

    Only `current_jti` may be exchanged; presenting an older one means it leaked, so the family is revoked. The one
    exception is the browser's: two tabs refreshing at once with the same refresh cookie. Within a few seconds of a
    rotation, `previous_jti` presented from the cookie gets an access token without a rotation or a revocation.
    """

    __tablename__ = "refresh_token_families"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    current_jti: Mapped[str] = mapped_column(String(64))
    previous_jti: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_refreshed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))


class ApiKey(IdMixin, Base):
    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class DownloadTicket(IdMixin, Base):
    """A short-lived, single-use credential for one download URL, so a browser link never carries a bearer token.

    Only the hash of the ticket is stored. `target` is the URL it opens: the path and its query, minus the ticket.
    """

    __tablename__ = "download_tickets"

    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
