"""`/auth`: login, token refresh, logout, the caller's identity and API keys."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import ValidationError

from agent_api.auth import repository as repo
from agent_api.auth import service
from agent_api.auth.deps import CurrentAuth, CurrentUser
from agent_api.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
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
async def login(request: Request, db: DB, state: State) -> TokenPair:
    """Exchange a username or email and a password (JSON, or the OAuth2 form of /docs) for an access and a refresh
    token. 401 `invalid_credentials` for wrong credentials or a disabled account; 429 after repeated failures."""
    body = await _login_body(request)
    client_ip = request.client.host if request.client else "unknown"
    return await service.login(db, state, body.login, body.password, client_ip)


@router.post("/refresh", response_model=TokenPair)
async def refresh(body: RefreshRequest, db: DB, state: State) -> TokenPair:
    """Exchange a refresh token for a new pair; each refresh token works once. Reusing a rotated one revokes
    that login (401 `token_reused`); 401 `invalid_token` when it is invalid, revoked or expired."""
    return await service.refresh(db, state, body.refresh_token)


@router.get("/me", response_model=UserRead)
async def me(user: CurrentUser) -> UserRead:
    """The caller's account: id, username, email, role and creation time."""
    return UserRead.model_validate(user)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(auth: CurrentAuth, db: DB) -> None:
    """Revoke the caller's current login, its access and refresh tokens, at once (204). 400 `not_a_login` when
    called with an API key: revoke the key instead."""
    await service.logout(db, auth)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT)
async def logout_all(user: CurrentUser, db: DB) -> None:
    """Revoke every login of the caller, access and refresh tokens alike (204); API keys stay valid."""
    await service.logout_all(db, user)


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
