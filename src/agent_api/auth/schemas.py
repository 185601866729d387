"""Request and response bodies of the auth routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from agent_api.schema_text import NOT_BLANK

Username = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]
Email = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]


class LoginRequest(BaseModel):
    username: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)] | None = None
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)] | None = None
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]

    @model_validator(mode="after")
    def _one_identifier(self) -> LoginRequest:
        if not (self.username or self.email):
            raise ValueError("username or email is required")
        return self

    @property
    def login(self) -> str:
        return self.email or self.username or ""


class RefreshRequest(BaseModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="Required unless the request carries the `agent_api_refresh` cookie (set by login and refresh); "
        "wins over the cookie when given",
    )


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str | None
    role: str
    created_at: datetime


class ApiKeyCreate(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NOT_BLANK)]
    expires_at: datetime | None = Field(default=None, description="When the key stops working (ISO 8601); none = never")


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown only in this response; store it now.")


_UUID = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# tickets.DOWNLOAD_ROUTES, with an optional query and no fragment. Documentation only: the service checks the
# parsed URL itself (422 `not_a_download_route`), and also refuses a query that already holds `ticket`.
DOWNLOAD_PATH = (
    rf"^/api/v1/(?:sessions/{_UUID}/(?:workdir/download|files/content)|reports/{_UUID}/(?:download|view))"
    r"(?:\?[^#]*)?$"
)


class DownloadTicketCreate(BaseModel):
    path: Annotated[str, StringConstraints(min_length=1, max_length=8192)] = Field(
        description="The download URL to open, from `/api/v1` on, with its query: "
        "`/api/v1/sessions/{id}/workdir/download`, `/api/v1/sessions/{id}/files/content?path=...`, "
        "`/api/v1/reports/{id}/download?format=...` or `/api/v1/reports/{id}/view`",
        json_schema_extra={"pattern": DOWNLOAD_PATH},
    )


class DownloadTicketRead(BaseModel):
    ticket: str
    expires_at: datetime
    expires_in: int
    url: str = Field(description="`path` with the ticket added (`?ticket=` or `&ticket=`): use it as it is")
