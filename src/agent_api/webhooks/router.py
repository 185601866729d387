"""`/webhooks`: register endpoints, rotate their secrets, send a test, and read what was delivered."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB, State, end_transaction
from agent_api.models import Webhook
from agent_api.pagination import Pagination, paged
from agent_api.webhooks import repository as repo
from agent_api.webhooks import service
from agent_api.webhooks.schemas import (
    DeliveryPage,
    DeliveryRead,
    SecretRotated,
    TestDelivery,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookRead,
    WebhookUpdate,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def _manageable(webhook_id: uuid.UUID, user: CurrentUser, db: DB) -> Webhook:
    return await service.get_manageable(db, user, webhook_id)


ManageableWebhook = Annotated[Webhook, Depends(_manageable)]


async def _check_target(db: DB, state: State, url: str) -> None:
    # DNS can be slow: the request's transaction so far (authentication) is committed before the lookup, so it
    # never holds SQLite's write lock meanwhile.
    await end_transaction(db)
    await service.check_target(state, url)


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
async def create_webhook(body: WebhookCreate, user: CurrentUser, db: DB, state: State) -> WebhookCreated:
    """Register an endpoint for the given event types (201). The signing secret (`whsec_...`) is in this response
    only. 422 `url_not_allowed` for a loopback, private or link-local target (unless its host is in
    `AGENT_API_WEBHOOK_ALLOWED_HOSTS`); 403 when a non-admin asks for `is_global`."""
    await _check_target(db, state, body.url)
    webhook, secret = await service.create(db, state, user, body)
    return WebhookCreated(**WebhookRead.model_validate(webhook).model_dump(), secret=secret)


@router.get("", response_model=WebhookPage)
async def list_webhooks(user: CurrentUser, db: DB, params: Pagination) -> WebhookPage:
    """The caller's webhooks (an admin also sees the global ones), oldest first."""
    stmt = repo.manageable(user).order_by(Webhook.created_at, Webhook.id)
    return await paged(db, stmt, params, WebhookRead)


@router.get("/{webhook_id}", response_model=WebhookRead)
async def get_webhook(webhook: ManageableWebhook) -> WebhookRead:
    """One of the caller's webhooks; `disabled_reason` says why one stopped. 404 for anyone else's."""
    return WebhookRead.model_validate(webhook)


@router.patch("/{webhook_id}", response_model=WebhookRead)
async def update_webhook(webhook: ManageableWebhook, body: WebhookUpdate, db: DB, state: State) -> WebhookRead:
    """Change the URL, events or description; `is_active: true` re-enables a disabled endpoint, `false` pauses it
    (its pending deliveries fail)."""
    if body.url is not None and body.url != webhook.url:
        await _check_target(db, state, body.url)
    return WebhookRead.model_validate(await service.update(db, webhook, body))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(webhook: ManageableWebhook, user: CurrentUser, db: DB) -> None:
    """Remove the webhook and its delivery history; nothing more is sent to it."""
    await service.delete(db, user, webhook)


@router.post("/{webhook_id}/rotate-secret", response_model=SecretRotated)
async def rotate_secret(webhook: ManageableWebhook, db: DB, state: State) -> SecretRotated:
    """A new signing secret, shown only here. For 24 hours each delivery is signed with both the new and the
    previous secret, so a receiver can switch without missing one."""
    secret, webhook = await service.rotate_secret(db, state, webhook)
    assert webhook.previous_secret_expires_at is not None
    return SecretRotated(secret=secret, previous_secret_expires_at=webhook.previous_secret_expires_at)


@router.post("/{webhook_id}/test", response_model=TestDelivery, status_code=status.HTTP_202_ACCEPTED)
async def test_webhook(webhook: ManageableWebhook, db: DB) -> TestDelivery:
    """Queue a signed `webhook.test` event to this endpoint (202 with the delivery's id; follow it in
    `/webhooks/{id}/deliveries`). 409 `webhook_inactive` for a disabled webhook, `webhook_test_pending` while an
    earlier test is still being delivered."""
    delivery = await service.send_test(db, webhook)
    await db.flush()
    return TestDelivery(delivery_id=delivery.id, event_id=delivery.event_id)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(webhook: ManageableWebhook, db: DB, params: Pagination) -> DeliveryPage:
    """The webhook's deliveries, newest first: status, attempts, the last status code or error, the next attempt."""
    return await paged(db, repo.deliveries_of(webhook.id), params, DeliveryRead)
