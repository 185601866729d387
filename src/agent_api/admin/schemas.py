"""Request and response bodies of the admin routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from agent_api.auth.schemas import Email, Password, Username
from agent_api.pagination import Page

Budget = Annotated[float, Field(ge=0, le=1_000_000_000)]


class AdminUserCreate(BaseModel):
    username: Username
    email: Email | None = None
    password: Password
    is_admin: bool = False
    monthly_budget_usd: Budget | None = Field(default=None, description="USD per month; null: the default applies")


class AdminUserUpdate(BaseModel):
    """Only the fields sent change; `monthly_budget_usd: null` clears the user's own budget (the default applies)."""

    # Absent: unchanged; null is refused (422), so the document does not offer it.
    is_admin: bool | SkipJsonSchema[None] = None
    is_active: bool | SkipJsonSchema[None] = None
    monthly_budget_usd: Budget | None = None


class PasswordReset(BaseModel):
    new_password: Password | None = Field(default=None, description="Omit to have a temporary password generated")


class PasswordResetResult(BaseModel):
    user_id: uuid.UUID
    temporary_password: str | None = Field(description="The generated password, shown only here; null if given")
    revoked_logins: int = Field(description="Refresh-token families revoked: the user is signed out everywhere")


class AdminUserRead(BaseModel):
    id: uuid.UUID
    username: str
    email: str | None
    role: str
    is_admin: bool
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None
    monthly_budget_usd: float | None = Field(description="The user's own budget; null when none is set")
    effective_budget_usd: float | None = Field(description="The budget that applies; null means unlimited")
    session_count: int
    current_month_cost_usd: float
    total_cost_usd: float


class AdminSessionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    owner_username: str
    name: str | None
    status: str
    model: str | None
    is_fork: bool
    parent_session_id: uuid.UUID | None
    message_count: int
    tool_call_count: int
    turn_count: int
    total_cost_usd: float
    total_input_tokens: int
    total_output_tokens: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None


class AdminSessionPage(Page[AdminSessionRead]):
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the rows after this page (keyset); null on the last page"
    )


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    action: str
    actor_id: uuid.UUID | None
    target_user_id: uuid.UUID | None
    target_type: str | None
    target_id: str | None
    ip_address: str | None
    details: dict[str, Any]
    created_at: datetime


class UserStats(BaseModel):
    total: int
    enabled: int
    disabled: int
    admins: int
    active_today: int = Field(description="Users with a turn today")
    active_this_month: int


class UsageFigures(BaseModel):
    turns: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Spender(BaseModel):
    user_id: uuid.UUID
    username: str
    cost_usd: float
    turns: int


class AdminStats(BaseModel):
    generated_at: datetime
    today_start: datetime
    period_start: datetime = Field(description="Start of the budget month (UTC)")
    period_end: datetime
    users: UserStats
    sessions_total: int
    sessions_by_status: dict[str, int]
    live_sdk_clients: int
    running_turns: int
    today: UsageFigures
    this_month: UsageFigures
    task_executions_by_status: dict[str, int] = Field(description="Executions created this month, by outcome")
    top_spenders: list[Spender] = Field(description="This month")
