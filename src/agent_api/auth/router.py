"""`/auth`: login, token refresh (body or cookie), logout, the caller's identity, API keys and download tickets."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Cookie, Request, Response, status
from pydantic import ValidationError

from agent_api.auth import cookies, service, tickets
from agent_api.auth import repository as repo
from agent_api.auth.deps import CurrentAuth, CurrentUser
from agent_api.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    DownloadTicketCreate,
    DownloadTicketRead,
    LoginRequest,
    RefreshRequest,
    TokenPair,
    UserRead,
)
from agent_api.deps import DB, State
from agent_api.errors import ValidationFailed
from agent_api.pagination import Page, Pagination, paged

router = APIRouter(prefix="/auth", tags=["auth"])

_LOGIN_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                }
            },
        },
    }
}


async def _login_body(request: Request) -> LoginRequest:
    """JSON `{username|email, password}`, or the OAuth2 password form the docs page sends."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            data: Any = {k: v for k, v in form.items() if k in ("username", "email", "password") and isinstance(v, str)}
        else:
            data = await request.json()
        return LoginRequest.model_validate(data)
    except ValidationError as exc:
        details = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ValidationFailed("Invalid login request", details=details) from exc
    except ValueError as exc:
        raise ValidationFailed("Request body is not valid JSON") from exc


@router.post("/login", response_model=TokenPair, openapi_extra=_LOGIN_BODY_DOC)
async def login(request: Request, response: Response, db: DB, state: State) -> TokenPair:
    """Exchange a username or email and a password (JSON, or the OAuth2 form of /docs) for an access and a refresh
    token; the refresh token is also set as the `agent_api_refresh` cookie (HttpOnly, SameSite=Strict, path
    /api/v1/auth). 401 `invalid_credentials` for wrong credentials or a disabled account; 429 after repeated
    failures."""
    body = await _login_body(request)
    client_ip = request.client.host if request.client else "unknown"
    pair = await service.login(db, state, body.login, body.password, client_ip)
    cookies.set_refresh_cookie(response, request, pair.refresh_token, state.settings.refresh_token_ttl_s)
    return pair


RefreshCookie = Annotated[
    str | None,
    Cookie(alias=cookies.REFRESH_COOKIE, include_in_schema=False, max_length=4096),
]


@router.post("/refresh", response_model=TokenPair)
async def refresh(
    request: Request,
    response: Response,
    db: DB,
    state: State,
    cookie: RefreshCookie = None,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> TokenPair:
    """Exchange a refresh token for a new pair; each refresh token works once, and the new one is set as the
    `agent_api_refresh` cookie. The token comes from the body, or, with no body (or `{}`), from that cookie.
    Reusing a rotated token revokes that login (401 `token_reused`), except a cookie's within 10 seconds of its
    rotation (two browser tabs refreshing at once): that answers a new access token, the same refresh token and
    no new cookie. 401 `invalid_token` when it is invalid, revoked or expired."""
    token = body.refresh_token if body is not None else None
    if token is None and cookie is None:
        raise ValidationFailed(
            "Invalid request: body.refresh_token: Field required (or send the refresh cookie)",
            details=[{"loc": ["body", "refresh_token"], "msg": "Field required", "type": "missing"}],
        )
    from_cookie = token is None
    grace_s = cookies.REFRESH_COOKIE_GRACE_S if from_cookie else 0.0
    refreshed = await service.refresh(db, state, token or cookie or "", grace_s=grace_s)
    if refreshed.rotated:
        cookies.set_refresh_cookie(response, request, refreshed.pair.refresh_token, state.settings.refresh_token_ttl_s)
    return refreshed.pair


@router.get("/me", response_model=UserRead)
async def me(user: CurrentUser) -> UserRead:
    """The caller's account: id, username, email, role and creation time."""
    return UserRead.model_validate(user)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(auth: CurrentAuth, db: DB, request: Request, response: Response) -> None:
    """Revoke the caller's current login, its access and refresh tokens, at once, and clear the refresh cookie
    (204). 400 `not_a_login` when called with an API key: revoke the key instead."""
    await service.logout(db, auth)
    cookies.clear_refresh_cookie(response, request)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT)
async def logout_all(user: CurrentUser, db: DB, request: Request, response: Response) -> None:
    """Revoke every login of the caller, access and refresh tokens alike, and clear the refresh cookie (204); API
    keys stay valid."""
    await service.logout_all(db, user)
    cookies.clear_refresh_cookie(response, request)


@router.post("/download-ticket", response_model=DownloadTicketRead, status_code=status.HTTP_201_CREATED)
async def download_ticket(body: DownloadTicketCreate, user: CurrentUser, db: DB) -> DownloadTicketRead:
    """A ticket that lets a browser open one download URL without the bearer token (201): single use, valid 60
    seconds, bound to the caller and to `path` with its whole query (the ticket excepted). Only
    `/api/v1/sessions/{id}/workdir/download`, `/api/v1/sessions/{id}/files/content` and
    `/api/v1/reports/{id}/download` accept one (422 `not_a_download_route` for any other path); open `url` as it
    is. Another user's session or report still answers 404."""
    issued = await tickets.issue(db, user, body.path)
    return DownloadTicketRead(
        ticket=issued.ticket, expires_at=issued.expires_at, expires_in=tickets.TICKET_TTL_S, url=issued.url
    )


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_api_key(body: ApiKeyCreate, user: CurrentUser, db: DB) -> ApiKeyCreated:
    """Create an API key to send as a bearer token (201). The secret `key` appears only in this answer;
    422 when `expires_at` is not in the future."""
    api_key, secret = await service.create_api_key(db, user, body)
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(api_key).model_dump(), "key": secret})


@router.get("/api-keys", response_model=Page[ApiKeyRead])
async def list_api_keys(user: CurrentUser, db: DB, params: Pagination) -> Page[ApiKeyRead]:
    """The caller's API keys, oldest first, revoked and expired ones included; never the secret."""
    return await paged(db, repo.api_keys_of(user.id), params, ApiKeyRead)


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(key_id: uuid.UUID, user: CurrentUser, db: DB) -> None:
    """Revoke one of the caller's API keys at once (204); 404 for an unknown key or another user's."""
    await service.revoke_api_key(db, user, key_id)
