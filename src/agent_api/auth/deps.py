"""Who is calling: `CurrentAuth`, `CurrentUser`, `AdminUser`, and `DownloadUser` (a bearer or a download ticket)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer

from agent_api.auth import service, tickets
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


# Dependencies are `async def` even with nothing to await: a plain `def` one runs on the thread pool.
async def get_current_user(auth: CurrentAuth) -> User:
    return auth.user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("Administrator role required", code="admin_required")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]


DownloadTicketParam = Annotated[
    str | None,
    Query(
        alias=tickets.TICKET_PARAM,
        max_length=200,
        description="A download ticket (`POST /auth/download-ticket`) instead of the `Authorization` header, for "
        "browser downloads: single use, valid 60 seconds, for exactly the URL it was issued for.",
    ),
]


async def get_download_user(
    request: Request,
    db: DB,
    state: State,
    token: Annotated[str | None, Depends(_bearer)],
    ticket: DownloadTicketParam = None,
) -> User:
    """The caller of a download route: by a download ticket when the URL carries one, else as `CurrentUser`."""
    if ticket is None:
        if not token:
            raise Unauthorized()
        return (await service.authenticate(db, state, token)).user
    # Its own write transaction: the request's own is read-only (a GET), and must not upgrade to a writer.
    async with state.db.transaction() as tx:
        user = await tickets.redeem(tx, ticket, request.url.path, request.query_params.multi_items())
    if user is None:
        raise Unauthorized("Invalid, expired or already used download ticket", code="invalid_ticket")
    return user


DownloadUser = Annotated[User, Depends(get_download_user)]
