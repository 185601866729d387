"""Validation dependencies of the admin routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from agent_api.admin import service
from agent_api.auth.deps import AdminUser
from agent_api.deps import DB
from agent_api.models import User


async def _target_user(user_id: uuid.UUID, _admin: AdminUser, db: DB) -> User:
    """The user an admin acts on; the admin check comes first, so others get 403, never a 404 that probes ids."""
    return await service.target_user(db, user_id)


TargetUser = Annotated[User, Depends(_target_user)]
