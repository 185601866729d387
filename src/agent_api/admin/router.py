"""HTTP routes of admin: system stats, every user's sessions, user management and the audit log (403 for others)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from agent_api.admin import service
from agent_api.admin.deps import TargetUser
from agent_api.admin.repository import AuditFilters, SessionFilters, UserFilters
from agent_api.admin.schemas import (
    AdminSessionPage,
    AdminStats,
    AdminUserCreate,
    AdminUserRead,
    AdminUserUpdate,
    AuditEventRead,
    PasswordReset,
    PasswordResetResult,
)
from agent_api.agent_settings import SessionStatus
from agent_api.auth.deps import AdminUser
from agent_api.deps import DB, State
from agent_api.pagination import Page, Pagination

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/stats", response_model=AdminStats)
async def stats(_admin: AdminUser, db: DB, state: State) -> AdminStats:
    """System-wide figures: users, sessions by status, live agents, running turns, usage today and this month,
    task executions this month by status and the top spenders. Admins only (403 `admin_required` for others)."""
    return await service.stats(db, state)


@router.get("/sessions", response_model=AdminSessionPage)
async def list_sessions(
    _admin: AdminUser,
    db: DB,
    pagination: Pagination,
    user_id: uuid.UUID | None = None,
    status_: Annotated[SessionStatus | None, Query(alias="status")] = None,
    created_after: Annotated[datetime | None, Query(description="Inclusive")] = None,
    created_before: Annotated[datetime | None, Query(description="Exclusive")] = None,
    cost_above: Annotated[float | None, Query(ge=0, description="Sessions that cost more than this (USD)")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> AdminSessionPage:
    """Every user's sessions, newest first, with the owner's username. Admins only (403 for others).
    Pass `next_cursor` as `?cursor=` to page by keyset, with no repeats while rows are added; 422 `invalid_cursor`."""
    filters = SessionFilters(user_id, status_, created_after, created_before, cost_above)
    return await service.list_sessions(db, filters, pagination, cursor)


@router.get("/users", response_model=Page[AdminUserRead])
async def list_users(
    _admin: AdminUser,
    db: DB,
    state: State,
    pagination: Pagination,
    search: Annotated[str | None, Query(max_length=100)] = None,
    role: Literal["admin", "user"] | None = None,
    is_active: bool | None = None,
) -> Page[AdminUserRead]:
    """Users with their session count, this month's cost, own and effective monthly budget and last login;
    filters `search` (username or email), `role`, `is_active`. Admins only (403 for others)."""
    return await service.list_users(db, state, UserFilters(search, role, is_active), pagination)


@router.post("/users", response_model=AdminUserRead, status_code=status.HTTP_201_CREATED)
async def create_user(body: AdminUserCreate, admin: AdminUser, db: DB, state: State) -> AdminUserRead:
    """Create a user (201), optionally an admin or with a monthly budget; the change is audited. Admins only
    (403 for others); 409 `username_taken` / `email_taken` when the username or email is in use."""
    return await service.create_user(db, state, admin, body)


@router.get("/users/{user_id}", response_model=AdminUserRead)
async def read_user(user_id: uuid.UUID, _admin: AdminUser, db: DB, state: State) -> AdminUserRead:
    """One user with the same figures as the user list. Admins only (403 for others); 404 `user_not_found`."""
    return await service.read_user(db, state, user_id)


@router.patch("/users/{user_id}", response_model=AdminUserRead)
async def update_user(user: TargetUser, body: AdminUserUpdate, admin: AdminUser, db: DB, state: State) -> AdminUserRead:
    """Change a user's `is_admin`, `is_active` or `monthly_budget_usd` (null clears it); disabling signs them
    out everywhere. Admins only (403); 404 `user_not_found`; 409 `cannot_demote_self` / `cannot_disable_self`."""
    return await service.update_user(db, state, admin, user, body)


@router.post("/users/{user_id}/reset-password", response_model=PasswordResetResult)
async def reset_password(
    user: TargetUser, admin: AdminUser, db: DB, body: PasswordReset | None = None
) -> PasswordResetResult:
    """Set a user's password, or without `new_password` generate a temporary one, returned only here; the
    user is signed out everywhere (API keys stay valid). Admins only (403 for others); 404 `user_not_found`."""
    return await service.reset_password(db, admin, user, body or PasswordReset())


@router.get("/audit", response_model=Page[AuditEventRead])
async def list_audit(
    _admin: AdminUser,
    db: DB,
    pagination: Pagination,
    action: Annotated[str | None, Query(max_length=64, description='An action, or a family such as "admin.*"')] = None,
    actor_id: uuid.UUID | None = None,
    target_user_id: uuid.UUID | None = None,
    since: Annotated[datetime | None, Query(description="Inclusive")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive")] = None,
) -> Page[AuditEventRead]:
    """The audit log, newest first; filters `action` (or a family such as `admin.*`), `actor_id`,
    `target_user_id`, `since` (inclusive), `until` (exclusive). Admins only (403 for others)."""
    return await service.list_audit(db, AuditFilters(action, actor_id, target_user_id, since, until), pagination)
