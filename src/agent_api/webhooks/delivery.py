"""Delivering webhooks: due attempts claimed from their rows, signed when sent, retried with backoff.

At least once: an attempt is claimed (its row leased) before it is sent and recorded after, so a process that dies
in between leaves it to be sent again once the lease runs out, with the same `webhook-id`. Attempts are signed per
Standard Webhooks at the moment they leave (the real wall clock, whatever clock schedules them). The target is
checked against SSRF on every attempt and the connection goes to the address that was checked; redirects are
failures, never followed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import ssl
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from standardwebhooks.webhooks import Webhook as Signer

from agent_api.models import User, Webhook, WebhookDelivery
from agent_api.runtime import ssrf
from agent_api.state import AppState
from agent_api.webhooks import repository as repo
from agent_api.webhooks.service import unseal

log = logging.getLogger("agent_api.webhooks")

# Seconds to wait after each failed attempt (plus or minus 10% jitter); after the last, the delivery has failed.
# About 27 hours in all, so an endpoint down for a day is disabled while its deliveries still retry.
RETRY_DELAYS_S = (5, 30, 120, 600, 3_600, 6 * 3_600, 10 * 3_600, 10 * 3_600)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
BATCH = 50
CONCURRENCY = 8
LEASE_MARGIN_S = 30
USER_AGENT = "agent-api-webhooks/1"
_jitter = random.SystemRandom()


@functools.cache
def _tls() -> ssl.SSLContext:
    # Built once: loading the system's certificates takes tens of milliseconds, and would stall the event loop
    # on every attempt.
    return ssl.create_default_context()


def retry_delay(attempts: int) -> timedelta | None:
    """How long after failed attempt number `attempts` (1-based) the next one is due; None when none is left."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return timedelta(seconds=RETRY_DELAYS_S[attempts - 1] * _jitter.uniform(0.9, 1.1))


def signature_header(secrets: list[str], event_id: str, sent_at: datetime, body: str) -> str:
    return " ".join(Signer(secret).sign(event_id, sent_at, body) for secret in secrets)


def body_of(delivery: WebhookDelivery) -> str:
    return json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)


async def deliver_due(state: AppState) -> float | None:
    """Send every attempt that is due now; the seconds until the next one is due (None: nothing pending).

    At most one attempt per webhook per pass, oldest first: an endpoint that is slow or piles up deliveries delays
    its own, not everybody's."""
    now = state.clock()
    async with state.db.transaction(readonly=True) as db:
        due = await repo.due(db, now, BATCH * 4)
    fair = list({webhook_id: (delivery_id, seen) for delivery_id, webhook_id, seen in reversed(due)}.values())
    fair = sorted(fair, key=lambda item: item[1])[:BATCH]
    claimed: list[uuid.UUID] = []
    if fair:
        # Long enough for the whole pass: every claimed attempt is sent before another process may take it.
        rounds = -(-len(fair) // CONCURRENCY)
        lease = now + timedelta(seconds=state.settings.webhook_timeout_s * rounds + LEASE_MARGIN_S)
        async with state.db.transaction() as db:
            claimed = [delivery_id for delivery_id, seen in fair if await repo.claim(db, delivery_id, seen, lease)]
    if claimed:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(delivery_id: uuid.UUID) -> None:
            async with limit:
                try:
                    await attempt(state, delivery_id)
                except Exception as exc:
                    # Counted as a failed attempt, so a delivery that cannot be sent ends instead of looping.
                    log.exception("webhook delivery %s failed unexpectedly", delivery_id)
                    await _record(state, delivery_id, None, f"internal error: {type(exc).__name__}", final=False)

        await asyncio.gather(*(one(d) for d in claimed))
    if len(due) == BATCH * 4 or len(fair) == BATCH:
        return 0.0
    async with state.db.transaction(readonly=True) as db:
        next_at = await repo.next_due_at(db)
    return None if next_at is None else max(0.0, (next_at - state.clock()).total_seconds())


async def attempt(state: AppState, delivery_id: uuid.UUID) -> None:
    async with state.db.transaction(readonly=True) as db:
        delivery = await db.get(WebhookDelivery, delivery_id)
        webhook = await db.get(Webhook, delivery.webhook_id) if delivery is not None else None
    if delivery is None:
        return
    if webhook is None or not webhook.is_active:
        await _record(state, delivery_id, None, "the webhook is disabled", final=True)
        return
    async with state.db.transaction(readonly=True) as db:
        owner = await db.get(User, webhook.user_id)
    if owner is None or not owner.is_active or (webhook.is_global and not owner.is_admin):
        await _record(state, delivery_id, None, "the webhook's owner may no longer receive these events", final=True)
        return
    status_code, error = await send(state, webhook, delivery)
    await _record(state, delivery_id, status_code, error, final=False)


async def send(state: AppState, webhook: Webhook, delivery: WebhookDelivery) -> tuple[int | None, str | None]:
    """POST one signed attempt: (status code or None, error or None)."""
    secrets = [unseal(state, webhook.secret_encrypted)]
    expires = webhook.previous_secret_expires_at
    if webhook.previous_secret_encrypted and expires is not None and expires > datetime.now(UTC):
        secrets.append(unseal(state, webhook.previous_secret_encrypted))
    body = body_of(delivery)
    sent_at = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature_header(secrets, delivery.event_id, sent_at, body),
    }
    try:
        host, port, address = await ssrf.pinned_target(webhook.url, state.settings.webhook_allowed_hosts)
    except ssrf.UnsafeUrl as exc:
        return None, f"target refused: {exc}"
    url = httpx.URL(webhook.url)
    literal = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets in the Host header
    headers["host"] = literal if url.port is None else f"{literal}:{port}"
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    timeout_s = state.settings.webhook_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            async with httpx.AsyncClient(
                timeout=timeout_s, follow_redirects=False, trust_env=False, verify=_tls()
            ) as client:
                request = client.build_request(
                    "POST", url.copy_with(host=address), content=body.encode(), headers=headers, extensions=extensions
                )
                # The response body is never read: a receiver cannot make us hold a large one.
                response = await client.send(request, stream=True)
                await response.aclose()
    except TimeoutError:
        return None, f"no response within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
    if 200 <= response.status_code < 300:
        return response.status_code, None
    if 300 <= response.status_code < 400:
        return response.status_code, f"HTTP {response.status_code}: redirects are not followed"
    return response.status_code, f"HTTP {response.status_code}"


async def _record(
    state: AppState, delivery_id: uuid.UUID, status_code: int | None, error: str | None, *, final: bool
) -> None:
    now = state.clock()
    async with state.db.transaction() as db:
        delivery = await db.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status != "pending":
            return
        webhook = await db.get(Webhook, delivery.webhook_id)
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error = status_code, error
        if error is None:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = "succeeded", now, None
            if webhook is not None:
                webhook.failing_since = None
            return
        delay = None if final else retry_delay(delivery.attempts)
        if delay is None:
            delivery.status, delivery.next_attempt_at = "failed", None
        else:
            delivery.next_attempt_at = now + delay
        if webhook is not None and webhook.is_active:
            _count_failure(state, webhook, now, error)
            if not webhook.is_active:
                await db.flush()
                await repo.fail_pending(db, webhook.id, "the webhook was disabled")


def _count_failure(state: AppState, webhook: Webhook, now: datetime, error: str) -> None:
    if webhook.failing_since is None:
        webhook.failing_since = now
        return
    failing_for = (now - webhook.failing_since).total_seconds()
    if failing_for >= state.settings.webhook_disable_after_s:
        hours = failing_for / 3_600
        webhook.is_active = False
        webhook.disabled_reason = f"every delivery failed for {hours:.1f} h (last: {error[:300]})"
        webhook.updated_at = now
        log.warning("webhook %s disabled: %s", webhook.id, webhook.disabled_reason)
