"""Download tickets: a browser's download link carries a short-lived, single-use ticket, never the bearer token.

A ticket is bound to its user and to one URL: the path and its whole query string, without the ticket itself
(so a ticket for `/reports/{id}/download?format=json` opens neither `?format=pdf` nor another report, and one for
`/sessions/{id}/files/content?path=a.txt` no other file). Query parameters are compared decoded and in any order.
Only the three download routes accept a ticket (`DOWNLOAD_ROUTES`); a ticket only says who is calling, so the
route's own ownership check still answers 404 for another user's session or report.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.auth import repository as repo
from agent_api.errors import ValidationFailed
from agent_api.models import DownloadTicket, User
from agent_api.models.base import utcnow

TICKET_TTL_S = 60
TICKET_PARAM = "ticket"
TICKET_PREFIX = "dlt_"
MAX_TARGET_CHARS = 8192
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# The GET routes that produce downloads; nothing else takes `?ticket=`.
DOWNLOAD_ROUTES = tuple(
    re.compile(pattern)
    for pattern in (
        rf"/api/v1/sessions/{_UUID}/workdir/download",
        rf"/api/v1/sessions/{_UUID}/files/content",
        rf"/api/v1/reports/{_UUID}/download",
        rf"/api/v1/reports/{_UUID}/view",
    )
)


@dataclass(frozen=True)
class IssuedTicket:
    ticket: str
    expires_at: datetime
    url: str


def _hash(ticket: str) -> str:
    # 256 random bits: a fast hash is enough, and allows the lookup by hash.
    return hashlib.sha256(ticket.encode()).hexdigest()


def canonical_target(path: str, query: Iterable[tuple[str, str]]) -> str:
    """The URL a ticket is bound to: the path, then the decoded query pairs (minus the ticket) in sorted order."""
    pairs = sorted((k, v) for k, v in query if k != TICKET_PARAM)
    return f"{path}?{urlencode(pairs)}" if pairs else path


def _parse_target(url: str) -> tuple[str, str]:
    """The bound target and the URL to hand back, for a client's `/api/v1/...` download URL; 422 otherwise."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or parts.fragment or not any(r.fullmatch(parts.path) for r in DOWNLOAD_ROUTES):
        raise ValidationFailed(
            "path must be a download route of this server: /api/v1/sessions/{id}/workdir/download, "
            "/api/v1/sessions/{id}/files/content?path=..., /api/v1/reports/{id}/download?format=... or "
            "/api/v1/reports/{id}/view",
            code="not_a_download_route",
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == TICKET_PARAM for key, _ in query):
        raise ValidationFailed("path already carries a ticket", code="not_a_download_route")
    return canonical_target(parts.path, query), url


async def issue(db: AsyncSession, user: User, url: str) -> IssuedTicket:
    """A ticket for `url` (a path, with its query), valid TICKET_TTL_S seconds, good for one request."""
    target, url = _parse_target(url)
    now = utcnow()
    await repo.delete_expired_download_tickets(db, user.id, now)  # the table holds live tickets only
    ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=TICKET_TTL_S)
    db.add(DownloadTicket(ticket_hash=_hash(ticket), user_id=user.id, target=target, expires_at=expires_at))
    await db.flush()
    separator = "&" if "?" in url else "?"
    return IssuedTicket(ticket=ticket, expires_at=expires_at, url=f"{url}{separator}{TICKET_PARAM}={ticket}")


async def redeem(db: AsyncSession, ticket: str, path: str, query: Iterable[tuple[str, str]]) -> User | None:
    """The ticket's user, once, for exactly the URL it was issued for; None for a used, expired or other URL's
    ticket, or a disabled account."""
    user_id: uuid.UUID | None = await repo.redeem_download_ticket(
        db, _hash(ticket), canonical_target(path, query), utcnow()
    )
    if user_id is None:
        return None
    user = await repo.get_user(db, user_id)
    return user if user is not None and user.is_active else None
