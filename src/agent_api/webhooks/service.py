"""Registering webhooks: targets checked against SSRF, signing secrets made, stored encrypted and rotated."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import timedelta

from cryptography.fernet import InvalidToken
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api import audit
from agent_api.errors import Conflict, Forbidden, NotFound, ValidationFailed
from agent_api.models import User, Webhook, WebhookDelivery
from agent_api.models.base import utcnow
from agent_api.runtime import ssrf
from agent_api.security import fernet_for
from agent_api.state import AppState
from agent_api.webhook_outbox import TEST_EVENT, queue_deliveries
from agent_api.webhooks import repository as repo
from agent_api.webhooks.schemas import WebhookCreate, WebhookUpdate

SECRET_PREFIX = "whsec_"  # noqa: S105  (the standard's prefix, not a secret)
# After a rotation, receivers have this long to switch; until then deliveries carry both signatures.
PREVIOUS_SECRET_TTL = timedelta(hours=24)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def seal(state: AppState, secret: str) -> str:
    return fernet_for(state.settings.resolved_secret_key(), "webhook secrets").encrypt(secret.encode()).decode()


def unseal(state: AppState, token: str) -> str:
    try:
        return fernet_for(state.settings.resolved_secret_key(), "webhook secrets").decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise Conflict(
            "The webhook's secret cannot be decrypted with the server's current secret key; rotate it",
            code="webhook_secret_unreadable",
        ) from exc


async def check_target(state: AppState, url: str) -> None:
    """422 `url_not_allowed` unless the URL is http(s) to a public address or an allowlisted host."""
    try:
        await ssrf.check_url(url, state.settings.webhook_allowed_hosts)
    except ssrf.UnsafeUrl as exc:
        raise ValidationFailed(f"The webhook URL is not allowed: {exc}", code="url_not_allowed") from exc


async def get_manageable(db: AsyncSession, user: User, webhook_id: uuid.UUID) -> Webhook:
    webhook = await repo.get_manageable(db, user, webhook_id)
    if webhook is None:
        raise NotFound("Webhook not found", code="webhook_not_found")
    return webhook


async def create(db: AsyncSession, state: AppState, user: User, body: WebhookCreate) -> tuple[Webhook, str]:
    if body.is_global and not user.is_admin:
        raise Forbidden("Only administrators may add a global webhook", code="admin_required")
    if await repo.count_owned(db, user.id) >= state.settings.webhook_max_per_user:
        raise Conflict(
            f"A user may have at most {state.settings.webhook_max_per_user} webhooks", code="webhook_limit_reached"
        )
    secret = new_secret()
    webhook = Webhook(
        id=uuid.uuid4(),
        user_id=user.id,
        url=body.url,
        events=list(body.events),
        description=body.description,
        is_global=body.is_global,
        is_active=True,
        secret_encrypted=seal(state, secret),
    )
    db.add(webhook)
    audit.record(
        db,
        "webhook.created",
        actor_id=user.id,
        target_user_id=user.id,
        target_type="webhook",
        target_id=webhook.id,
        details={"events": webhook.events, "is_global": webhook.is_global},
    )
    await db.flush()
    return webhook, secret


async def update(db: AsyncSession, webhook: Webhook, body: WebhookUpdate) -> Webhook:
    fields = body.model_dump(exclude_unset=True)
    for name in ("url", "events"):
        if fields.get(name) is not None:
            setattr(webhook, name, fields[name])
    if "description" in fields:
        webhook.description = fields["description"]
    if fields.get("is_active") is True and not webhook.is_active:
        webhook.is_active, webhook.disabled_reason, webhook.failing_since = True, None, None
    elif fields.get("is_active") is False and webhook.is_active:
        webhook.is_active, webhook.disabled_reason = False, "paused by its owner"
        await repo.fail_pending(db, webhook.id, "the webhook was paused")
    webhook.updated_at = utcnow()
    await db.flush()
    return webhook


async def delete(db: AsyncSession, user: User, webhook: Webhook) -> None:
    audit.record(
        db,
        "webhook.deleted",
        actor_id=user.id,
        target_user_id=webhook.user_id,
        target_type="webhook",
        target_id=webhook.id,
    )
    await db.delete(webhook)
    await db.flush()


async def rotate_secret(db: AsyncSession, state: AppState, webhook: Webhook) -> tuple[str, Webhook]:
    secret = new_secret()
    webhook.previous_secret_encrypted = webhook.secret_encrypted
    webhook.previous_secret_expires_at = utcnow() + PREVIOUS_SECRET_TTL
    webhook.secret_encrypted = seal(state, secret)
    webhook.updated_at = utcnow()
    await db.flush()
    return secret, webhook


async def send_test(db: AsyncSession, webhook: Webhook) -> WebhookDelivery:
    if not webhook.is_active:
        raise Conflict('The webhook is disabled; re-enable it with PATCH {"is_active": true}', code="webhook_inactive")
    # One test at a time per endpoint: tests cannot pile up retries that crowd out real events.
    if await repo.pending_tests(db, webhook.id):
        raise Conflict(
            "A test delivery to this webhook is still pending; see /webhooks/{id}/deliveries",
            code="webhook_test_pending",
        )
    data = {"webhook_id": str(webhook.id), "message": "A test delivery from agent-api"}
    return queue_deliveries(db, [webhook.id], TEST_EVENT, data)[0]
