"""Request and response bodies of the webhook routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from agent_api.pagination import Page
from agent_api.webhook_outbox import EVENT_TYPES, EventType


def _plain_url(value: str) -> str:
    # Control characters and spaces would make the URL mean one thing to the check and another to the sender.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("the URL may not contain spaces or control characters")
    return value


# What the URL checks (`_plain_url`, then ssrf.check_url) let through, for the document only: the checks keep their
# own errors (422 `url_not_allowed`). Whether the host resolves to a public address (or is allowlisted) is
# decided when the URL is checked, and no pattern can say it.
URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
    r"(?:[/?#][^\x00-\x20\x7f\\]*)?$"
)
Url = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2_048),
    AfterValidator(_plain_url),
    Field(json_schema_extra={"pattern": URL_PATTERN}),
]
Description = Annotated[str, StringConstraints(max_length=1_000)]


def _distinct(events: list[EventType]) -> list[EventType]:
    return list(dict.fromkeys(events))


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # DESIGN: unknown fields are ignored, never stored

    url: Url
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES) * 2)
    description: Description | None = None
    # Admins only: a global webhook hears every user's events.
    is_global: bool = False

    _distinct_events = field_validator("events")(_distinct)


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: Url | None = None
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES) * 2)
    description: Description | None = None
    # `true` re-enables a disabled endpoint (and forgets its failures); `false` pauses it.
    is_active: bool | None = None

    @field_validator("events")
    @classmethod
    def _distinct_or_none(cls, events: list[EventType] | None) -> list[EventType] | None:
        return None if events is None else _distinct(events)


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    is_active: bool
    is_global: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(description="The signing secret (`whsec_...`); shown only in this response.")


class SecretRotated(BaseModel):
    secret: str = Field(description="The new signing secret; shown only in this response.")
    previous_secret_expires_at: datetime = Field(
        description="Until then each delivery carries a signature with the previous secret too."
    )


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class TestDelivery(BaseModel):
    delivery_id: uuid.UUID
    event_id: str
    status: Literal["pending"] = "pending"


WebhookPage = Page[WebhookRead]
DeliveryPage = Page[DeliveryRead]
