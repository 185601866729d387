"""Admin views and user management. Every change is audited in the same transaction as the change itself."""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import audit, security
from agent_api.admin import repository as repo
from agent_api.admin.schemas import (
    AdminSessionPage,
    AdminSessionRead,
    AdminStats,
    AdminUserCreate,
    AdminUserRead,
    AdminUserUpdate,
    AuditEventRead,
    PasswordReset,
    PasswordResetResult,
    Spender,
    UsageFigures,
    UserStats,
)
from agent_api.auth import service as auth_service
from agent_api.errors import Conflict, NotFound, ValidationFailed
from agent_api.models import User
from agent_api.models.user import ROLE_ADMIN, ROLE_USER
from agent_api.monitoring.budgets import effective_limit, month_bounds
from agent_api.pagination import Page, PageParams
from agent_api.state import AppState

TOP_SPENDERS = 10

# --- users -------------------------------------------------------------------------------------------------------


def _user_read(state: AppState, row: Any) -> AdminUserRead:
    user, session_count, month_cost = row
    return AdminUserRead(
        id=user.id,
        username=user.username,
        email=user.email,
        role=user.role,
        is_admin=user.is_admin,
        is_active=user.is_active,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
        monthly_budget_usd=user.monthly_budget_usd,
        effective_budget_usd=effective_limit(state, user.monthly_budget_usd),
        session_count=int(session_count),
        current_month_cost_usd=round(float(month_cost or 0), 6),
        total_cost_usd=float(user.total_cost_usd or 0),
    )


async def list_users(
    db: AsyncSession, state: AppState, filters: repo.UserFilters, params: PageParams
) -> Page[AdminUserRead]:
    start, end = month_bounds(state.clock())
    rows, total = await repo.users_page(db, filters, params, start, end)
    return Page[AdminUserRead].build([_user_read(state, r) for r in rows], total, params)


async def read_user(db: AsyncSession, state: AppState, user_id: uuid.UUID) -> AdminUserRead:
    start, end = month_bounds(state.clock())
    row = await repo.user_row(db, user_id, start, end)
    if row is None:
        raise NotFound("User not found", code="user_not_found")
    return _user_read(state, row)


async def create_user(db: AsyncSession, state: AppState, admin: User, body: AdminUserCreate) -> AdminUserRead:
    user = await auth_service.create_user(db, body.username, body.password, body.email, admin=body.is_admin)
    user.monthly_budget_usd = body.monthly_budget_usd
    await db.flush()
    details = {"username": user.username, "is_admin": body.is_admin, "monthly_budget_usd": body.monthly_budget_usd}
    audit.record(db, "admin.user_created", actor_id=admin.id, target_user_id=user.id, details=details)
    return await read_user(db, state, user.id)


async def target_user(db: AsyncSession, user_id: uuid.UUID) -> User:
    user = await repo.get_user(db, user_id)
    if user is None:
        raise NotFound("User not found", code="user_not_found")
    return user


async def update_user(
    db: AsyncSession, state: AppState, admin: User, user: User, body: AdminUserUpdate
) -> AdminUserRead:
    sent = body.model_fields_set
    if user.id == admin.id and body.is_admin is False:
        raise Conflict("You cannot remove your own admin role", code="cannot_demote_self")
    if user.id == admin.id and body.is_active is False:
        raise Conflict("You cannot disable your own account", code="cannot_disable_self")
    if ("is_admin" in sent and body.is_admin is None) or ("is_active" in sent and body.is_active is None):
        raise ValidationFailed("is_admin and is_active take true or false", code="validation_error")
    changes: dict[str, list[Any]] = {}
    if body.is_admin is not None and body.is_admin != user.is_admin:
        changes["is_admin"] = [user.is_admin, body.is_admin]
        user.role = ROLE_ADMIN if body.is_admin else ROLE_USER
    if body.is_active is not None and body.is_active != user.is_active:
        changes["is_active"] = [user.is_active, body.is_active]
        user.is_active = body.is_active
        if not body.is_active:
            # Access tokens already stop working (authentication checks the flag); this ends the refresh tokens.
            await auth_service.logout_all(db, user)
    if "monthly_budget_usd" in sent and body.monthly_budget_usd != user.monthly_budget_usd:
        changes["monthly_budget_usd"] = [user.monthly_budget_usd, body.monthly_budget_usd]
        user.monthly_budget_usd = body.monthly_budget_usd
    if changes:
        await db.flush()
        audit.record(db, "admin.user_updated", actor_id=admin.id, target_user_id=user.id, details=changes)
    return await read_user(db, state, user.id)


async def reset_password(db: AsyncSession, admin: User, user: User, body: PasswordReset) -> PasswordResetResult:
    generated = None if body.new_password else secrets.token_urlsafe(18)
    password = body.new_password or generated or ""
    user.password_hash = await asyncio.to_thread(security.hash_password, password)
    revoked = await auth_service.logout_all(db, user)
    await db.flush()
    details = {"generated": generated is not None, "revoked_logins": revoked}
    audit.record(db, "admin.password_reset", actor_id=admin.id, target_user_id=user.id, details=details)
    return PasswordResetResult(user_id=user.id, temporary_password=generated, revoked_logins=revoked)


# --- sessions ----------------------------------------------------------------------------------------------------


def encode_cursor(created_at: datetime, session_id: uuid.UUID) -> str:
    raw = f"{created_at.astimezone(UTC).isoformat()}|{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, session_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(when)
        if created_at.tzinfo is None:
            raise ValueError("naive")
        return created_at, uuid.UUID(session_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed("Invalid cursor", code="invalid_cursor") from exc


async def list_sessions(
    db: AsyncSession, filters: repo.SessionFilters, params: PageParams, cursor: str | None
) -> AdminSessionPage:
    after = decode_cursor(cursor) if cursor else None
    rows, total, more = await repo.sessions_page(db, filters, params, after)
    items = [
        AdminSessionRead.model_validate(
            {**{f: getattr(s, f) for f in AdminSessionRead.model_fields if f != "owner_username"}, "owner_username": u}
        )
        for s, u in rows
    ]
    page = AdminSessionPage.build(items, total, params)
    assert isinstance(page, AdminSessionPage)
    if more:
        last = rows[-1][0]
        page.next_cursor = encode_cursor(last.created_at, last.id)
    return page


# --- stats -------------------------------------------------------------------------------------------------------


async def _usage(db: AsyncSession, start: datetime, end: datetime) -> tuple[UsageFigures, int]:
    figures = await repo.turn_figures(db, start, end)
    tool_calls = await repo.tool_calls_between(db, start, end)
    usage = UsageFigures(
        turns=figures["turns"],
        tool_calls=tool_calls,
        input_tokens=figures["input_tokens"],
        output_tokens=figures["output_tokens"],
        cost_usd=round(figures["cost_usd"], 6),
    )
    return usage, figures["active_users"]


async def stats(db: AsyncSession, state: AppState) -> AdminStats:
    now = state.clock().astimezone(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start, month_end = month_bounds(now)
    total, enabled, admins = await repo.user_counts(db)
    today_usage, active_today = await _usage(db, today, today + timedelta(days=1))
    month_usage, active_month = await _usage(db, month_start, month_end)
    by_status = await repo.sessions_by_status(db)
    spenders = await repo.top_spenders(db, month_start, month_end, TOP_SPENDERS)
    return AdminStats(
        generated_at=now,
        today_start=today,
        period_start=month_start,
        period_end=month_end,
        users=UserStats(
            total=total,
            enabled=enabled,
            disabled=total - enabled,
            admins=admins,
            active_today=active_today,
            active_this_month=active_month,
        ),
        sessions_total=sum(by_status.values()),
        sessions_by_status=by_status,
        live_sdk_clients=len(state.agents) if state.agents is not None else 0,
        running_turns=state.dispatcher.running_turns(),
        today=today_usage,
        this_month=month_usage,
        task_executions_by_status=await repo.task_executions_by_status(db, month_start, month_end),
        top_spenders=[
            Spender(user_id=uid, username=name, cost_usd=round(float(cost), 6), turns=int(n))
            for uid, name, cost, n in spenders
        ],
    )


async def list_audit(db: AsyncSession, filters: repo.AuditFilters, params: PageParams) -> Page[AuditEventRead]:
    rows, total = await repo.audit_page(db, filters, params)
    return Page[AuditEventRead].build([AuditEventRead.model_validate(r) for r in rows], total, params)
