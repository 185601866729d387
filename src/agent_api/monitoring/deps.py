"""Validation dependencies of the monitoring routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB
from agent_api.models import User
from agent_api.monitoring import costs


async def _readable_user(user_id: uuid.UUID, caller: CurrentUser, db: DB) -> User:
    return await costs.readable_user(db, caller, user_id)


# A user whose figures the caller may read: themself, or anyone for an admin (404 otherwise).
ReadableUser = Annotated[User, Depends(_readable_user)]
