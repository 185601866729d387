"""Who is calling: `CurrentAuth`, `CurrentUser` and `AdminUser`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from agent_api.auth import service
from agent_api.auth.service import AuthContext
from agent_api.deps import DB, State
from agent_api.errors import Forbidden, Unauthorized
from agent_api.models import User

# auto_error=False: a missing credential is our 401 in our error shape, not FastAPI's.
_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)


async def get_auth(db: DB, state: State, token: Annotated[str | None, Depends(_bearer)]) -> AuthContext:
    if not token:
        raise Unauthorized()
    return await service.authenticate(db, state, token)


CurrentAuth = Annotated[AuthContext, Depends(get_auth)]


def get_current_user(auth: CurrentAuth) -> User:
    return auth.user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("Administrator role required", code="admin_required")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
