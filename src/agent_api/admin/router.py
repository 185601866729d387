"""HTTP routes of admin: system stats, every user's sessions, user management and the audit log (403 for others)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from agent_api.admin import service
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
    return await service.list_users(db, state, UserFilters(search, role, is_active), pagination)


@router.post("/users", response_model=AdminUserRead, status_code=status.HTTP_201_CREATED)
async def create_user(body: AdminUserCreate, admin: AdminUser, db: DB, state: State) -> AdminUserRead:
    return await service.create_user(db, state, admin, body)


@router.get("/users/{user_id}", response_model=AdminUserRead)
async def read_user(user_id: uuid.UUID, _admin: AdminUser, db: DB, state: State) -> AdminUserRead:
    return await service.read_user(db, state, user_id)


@router.patch("/users/{user_id}", response_model=AdminUserRead)
async def update_user(
    user_id: uuid.UUID, body: AdminUserUpdate, admin: AdminUser, db: DB, state: State
) -> AdminUserRead:
    return await service.update_user(db, state, admin, user_id, body)


@router.post("/users/{user_id}/reset-password", response_model=PasswordResetResult)
async def reset_password(
    user_id: uuid.UUID, admin: AdminUser, db: DB, body: PasswordReset | None = None
) -> PasswordResetResult:
    return await service.reset_password(db, admin, user_id, body or PasswordReset())


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
    return await service.list_audit(db, AuditFilters(action, actor_id, target_user_id, since, until), pagination)
