"""Queries of webhooks and their deliveries; user-facing ones start from a statement scoped to the caller."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import User, Webhook, WebhookDelivery
from agent_api.webhook_outbox import TEST_EVENT


def manageable(user: User) -> Select[Webhook]:
    """The caller's own webhooks, and for an admin every global one too."""
    scope = Webhook.user_id == user.id
    if user.is_admin:
        scope = or_(scope, Webhook.is_global.is_(True))
    return select(Webhook).where(scope)


async def get_manageable(db: AsyncSession, user: User, webhook_id: uuid.UUID) -> Webhook | None:
    return (await db.scalars(manageable(user).where(Webhook.id == webhook_id))).first()


async def count_owned(db: AsyncSession, user_id: uuid.UUID) -> int:
    return int(await db.scalar(select(func.count()).where(Webhook.user_id == user_id)) or 0)


def deliveries_of(webhook_id: uuid.UUID) -> Select[WebhookDelivery]:
    return (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    )


async def due(db: AsyncSession, now: datetime, limit: int) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
    """(delivery, webhook, when it fell due) of the attempts due by `now`, oldest first."""
    rows = await db.execute(
        select(WebhookDelivery.id, WebhookDelivery.webhook_id, WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return [(row[0], row[1], row[2]) for row in rows if row[2] is not None]


async def claim(db: AsyncSession, delivery_id: uuid.UUID, seen_at: datetime, lease_until: datetime) -> bool:
    """Take one due attempt: true for exactly one of the processes (or loops) that saw it due. The lease puts it
    off so nobody else takes it meanwhile; a process that dies mid-attempt leaves it to be retried after that."""
    result = await db.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at == seen_at,
        )
        .values(next_attempt_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def next_due_at(db: AsyncSession) -> datetime | None:
    return await db.scalar(select(func.min(WebhookDelivery.next_attempt_at)).where(WebhookDelivery.status == "pending"))


async def fail_pending(db: AsyncSession, webhook_id: uuid.UUID, reason: str) -> None:
    await db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == "pending")
        .values(status="failed", last_error=reason, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )


async def pending_tests(db: AsyncSession, webhook_id: uuid.UUID) -> int:
    return int(
        await db.scalar(
            select(func.count()).where(
                WebhookDelivery.webhook_id == webhook_id,
                WebhookDelivery.event_type == TEST_EVENT,
                WebhookDelivery.status == "pending",
            )
        )
        or 0
    )
