"""Users, logins, token rotation and API keys. Services flush; the request dependency commits."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import audit, security
from agent_api.auth import repository as repo
from agent_api.auth.schemas import ApiKeyCreate, TokenPair
from agent_api.auth_cache import CachedLogin, detached_copy
from agent_api.db import after_commit
from agent_api.errors import AppError, Conflict, NotFound, RateLimited, Unauthorized, ValidationFailed
from agent_api.models import ApiKey, RefreshTokenFamily, User
from agent_api.models.base import utcnow
from agent_api.models.user import ROLE_ADMIN, ROLE_USER
from agent_api.state import AppState

log = logging.getLogger("agent_api.auth")

INVALID_CREDENTIALS = "Invalid username or password"
# How stale `last_used_at` may get before a request with the key writes it again.
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class AuthContext:
    """Who is calling, and with which credential."""

    user: User
    family_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


# --- users -----------------------------------------------------------------------------------------


async def create_user(
    session: AsyncSession, username: str, password: str, email: str | None = None, *, admin: bool = False
) -> User:
    email = email.lower() if email else None
    if await repo.username_taken(session, username):
        raise Conflict(f"Username {username!r} is taken", code="username_taken")
    if email and await repo.email_taken(session, email):
        raise Conflict("Email is already in use", code="email_taken")
    password_hash = await asyncio.to_thread(security.hash_password, password)
    user = User(username=username, email=email, password_hash=password_hash, role=ROLE_ADMIN if admin else ROLE_USER)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise Conflict("Username or email is taken", code="username_taken") from exc
    return user


async def bootstrap_admin(state: AppState) -> User | None:
    """Create the configured admin when the server has no user yet."""
    settings = state.settings
    if not (settings.admin_username and settings.admin_password):
        return None
    async with state.db.transaction() as session:
        if await repo.count_users(session):
            return None
        user = await create_user(
            session, settings.admin_username, settings.admin_password, settings.admin_email, admin=True
        )
    log.info("created bootstrap admin %s", user.username)
    return user


# --- login and tokens ------------------------------------------------------------------------------


def _issue_pair(state: AppState, user_id: uuid.UUID, family_id: uuid.UUID, refresh_jti: str) -> TokenPair:
    settings = state.settings
    access, _ = state.jwt.encode("access", user_id, family_id, settings.access_token_ttl_s)
    refresh, _ = state.jwt.encode("refresh", user_id, family_id, settings.refresh_token_ttl_s, jti=refresh_jti)
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=settings.access_token_ttl_s)


@dataclass(frozen=True)
class Refreshed:
    pair: TokenPair
    # False for an answer within the grace: `pair.refresh_token` is the token presented, and the family's current
    # refresh token (set as the cookie by the refresh that rotated it) stays as it is.
    rotated: bool = True


async def login(session: AsyncSession, state: AppState, login: str, password: str, client_ip: str) -> TokenPair:
    limiter = state.login_limiter
    wait = limiter.retry_after(login, client_ip)
    if wait > 0:
        raise RateLimited(int(wait) + 1, "Too many failed login attempts; try again later")
    user = await repo.find_user_by_login(session, login)
    if user is None:
        await asyncio.to_thread(security.burn_password_check, password)
        ok = False
    else:
        ok = await asyncio.to_thread(security.verify_password, user.password_hash, password)
    # A disabled account answers exactly like a wrong password: nothing to learn from probing.
    if not ok or user is None or not user.is_active:
        limiter.failed(login, client_ip)
        audit.record_later(
            state,
            "auth.login_failed",
            target_user_id=user.id if user is not None else None,
            ip_address=client_ip,
            details={"login": login[:320]},
        )
        raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
    limiter.succeeded(login)
    now = utcnow()
    user.last_login_at = now
    family = RefreshTokenFamily(
        id=uuid.uuid4(),
        user_id=user.id,
        current_jti=security.new_jti(),
        created_at=now,
        expires_at=now + timedelta(seconds=state.settings.refresh_token_ttl_s),
    )
    session.add(family)
    await session.flush()
    # The new login's first requests need not read what this one just wrote (kept only once it commits, and only if
    # nothing about logins changed meanwhile).
    cached, generation = CachedLogin(detached_copy(user), family_id=family.id), _start_listening(state)
    after_commit(session, lambda: state.auth_cache.put(f"family:{family.id}", cached, generation))
    return _issue_pair(state, user.id, family.id, family.current_jti)


async def refresh(session: AsyncSession, state: AppState, refresh_token: str, *, grace_s: float = 0.0) -> Refreshed:
    """Rotate the login's refresh token. A rotated one presented again revokes the whole login, except within
    `grace_s` of its rotation, when the just-rotated token (and only it) gets a new access token, no rotation and no
    revocation: the refresh cookie's grace, for two browser tabs that refresh at the same moment."""
    try:
        claims = state.jwt.decode(refresh_token, "refresh")
    except security.InvalidToken as exc:
        raise Unauthorized("Invalid refresh token", code="invalid_token") from exc
    now = utcnow()
    family = _live_family(await repo.get_family(session, claims.family_id), claims.user_id, now)
    if claims.jti == family.current_jti:
        await _active_user(session, family.user_id)
        new_jti = security.new_jti()
        expires_at = now + timedelta(seconds=state.settings.refresh_token_ttl_s)
        if await repo.rotate_family(session, family.id, claims.jti, new_jti, now, expires_at):
            return Refreshed(_issue_pair(state, family.user_id, family.id, new_jti))
        # Another refresh with this token won the race: from here on it is a rotated token like any other.
        family = _live_family(await repo.get_family(session, family.id, fresh=True), claims.user_id, now)
    if _within_grace(family, claims.jti, now, grace_s):
        await _active_user(session, family.user_id)
        access, _ = state.jwt.encode("access", family.user_id, family.id, state.settings.access_token_ttl_s)
        pair = TokenPair(access_token=access, refresh_token=refresh_token, expires_in=state.settings.access_token_ttl_s)
        return Refreshed(pair, rotated=False)
    family.revoked_at, family.revoked_reason = now, "reuse"
    audit.record(
        session,
        "auth.refresh_reused",
        actor_id=family.user_id,
        target_user_id=family.user_id,
        target_type="refresh_token_family",
        target_id=family.id,
    )
    await session.flush()
    log.warning("refresh token reuse detected; family %s revoked", family.id)
    raise Unauthorized("Refresh token was already used; this login is revoked", code="token_reused", keep_changes=True)


def _live_family(family: RefreshTokenFamily | None, user_id: uuid.UUID, now: datetime) -> RefreshTokenFamily:
    if family is None or family.user_id != user_id or family.revoked_at is not None or family.expires_at <= now:
        raise Unauthorized("Refresh token revoked or expired", code="invalid_token")
    return family


def _within_grace(family: RefreshTokenFamily, jti: str, now: datetime, grace_s: float) -> bool:
    # No lower bound: a concurrent refresh that rotated after this one took `now` leaves a rotation in its future.
    rotated_at = family.last_refreshed_at
    return (
        grace_s > 0
        and family.previous_jti is not None
        and jti == family.previous_jti
        and rotated_at is not None
        and now - rotated_at <= timedelta(seconds=grace_s)
    )


async def _active_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await repo.get_user(session, user_id)
    if user is None or not user.is_active:
        raise Unauthorized("Account disabled", code="invalid_token")
    return user


async def authenticate(session: AsyncSession, state: AppState, token: str) -> AuthContext:
    """Resolve a bearer credential (access token or API key) to its user, or raise 401. The token is checked every
    time; what its login's rows said is cached until they change (`auth_cache.py`)."""
    if security.is_api_key(token):
        return await _authenticate_api_key(session, state, token)
    try:
        claims = state.jwt.decode(token, "access")
    except security.InvalidToken as exc:
        raise Unauthorized("Invalid or expired token", code="invalid_token") from exc
    cache, key = state.auth_cache, f"family:{claims.family_id}"
    cached = cache.get(key)
    if cached is not None and cached.user.id == claims.user_id:
        return AuthContext(user=await session.merge(cached.user, load=False), family_id=claims.family_id)
    generation = _start_listening(state)
    user = await repo.user_with_live_family(session, claims.user_id, claims.family_id)
    if user is None or not user.is_active:
        raise Unauthorized("Invalid or expired token", code="invalid_token")
    cache.put(key, CachedLogin(detached_copy(user), family_id=claims.family_id), generation)
    return AuthContext(user=user, family_id=claims.family_id)


def _start_listening(state: AppState) -> int:
    """The cache's generation before a read of what it will keep; starts the PostgreSQL listener on first use."""
    if state.auth_listener is not None:
        state.auth_listener.ensure_started(state.background.spawn)
    return state.auth_cache.generation


async def _authenticate_api_key(session: AsyncSession, state: AppState, key: str) -> AuthContext:
    key_hash = security.api_key_hash(key)
    cache, cache_key = state.auth_cache, f"key:{key_hash}"
    cached = cache.get(cache_key)
    if cached is not None:
        user = await session.merge(cached.user, load=False)
    else:
        generation = _start_listening(state)
        found = await repo.api_key_with_user(session, key_hash)
        if found is None:
            raise Unauthorized("Invalid API key", code="invalid_token")
        api_key, user = found
        if api_key.revoked_at is not None or not user.is_active:
            raise Unauthorized("API key revoked or expired", code="invalid_token")
        cached = CachedLogin(
            detached_copy(user),
            api_key_id=api_key.id,
            api_key_expires_at=api_key.expires_at,
            api_key_used_at=api_key.last_used_at,
        )
        cache.put(cache_key, cached, generation)
    now = utcnow()
    if cached.api_key_expires_at and cached.api_key_expires_at <= now:
        raise Unauthorized("API key revoked or expired", code="invalid_token")
    assert cached.api_key_id is not None
    if cached.api_key_used_at is None or now - cached.api_key_used_at >= API_KEY_TOUCH_INTERVAL:
        cached.api_key_used_at = now
        # Its own short transaction after this one: a read-only request must not upgrade to a writer.
        state.background.spawn(_touch_api_key(state, cached.api_key_id, now), name=f"touch-api-key-{cached.api_key_id}")
    return AuthContext(user=user, api_key_id=cached.api_key_id)


async def _touch_api_key(state: AppState, key_id: uuid.UUID, when: datetime) -> None:
    async with state.db.transaction() as session:
        await repo.touch_api_key(session, key_id, when)


async def logout(session: AsyncSession, auth: AuthContext) -> None:
    if auth.family_id is None:
        raise AppError("API keys are not logged out; revoke the key instead", code="not_a_login")
    family = await repo.get_family(session, auth.family_id)
    if family is not None and family.revoked_at is None:
        family.revoked_at, family.revoked_reason = utcnow(), "logout"
        await session.flush()


async def logout_all(session: AsyncSession, user: User) -> int:
    return await repo.revoke_families_of(session, user.id, utcnow(), "logout_all")


# --- API keys --------------------------------------------------------------------------------------


async def create_api_key(session: AsyncSession, user: User, body: ApiKeyCreate) -> tuple[ApiKey, str]:
    expires_at = body.expires_at
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= utcnow():
            raise ValidationFailed("expires_at must be in the future", code="validation_error")
    secret = security.new_api_key()
    api_key = ApiKey(
        user_id=user.id,
        name=body.name,
        prefix=security.api_key_display_prefix(secret),
        key_hash=security.api_key_hash(secret),
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(api_key)
    await session.flush()
    return api_key, secret


async def revoke_api_key(session: AsyncSession, user: User, key_id: uuid.UUID) -> None:
    api_key = await repo.get_api_key_of(session, user.id, key_id)
    if api_key is None:
        raise NotFound("API key not found")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        await session.flush()
