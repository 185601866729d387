"""Template queries. Everything a user may see starts from `visible_to`: own, public, or shared with them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    cast,
    column,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import SessionTemplate, TemplateShare, User
from agent_api.models.base import utcnow

_WORD = re.compile(r"\w+", re.UNICODE)
# The tsvector expression of the PostgreSQL GIN index (migration 0004); the query must repeat it exactly.
PG_TEMPLATE_VECTOR = (
    "setweight(to_tsvector('simple', coalesce(session_templates.name, '')), 'A') || "
    "setweight(to_tsvector('simple', coalesce(session_templates.tags::text, '')), 'B') || "
    "setweight(to_tsvector('simple', coalesce(session_templates.description, '')), 'C')"
)


def _shared_with(user_id: uuid.UUID) -> ColumnElement[bool]:
    return exists().where(TemplateShare.template_id == SessionTemplate.id, TemplateShare.user_id == user_id)


def visible_templates(user_id: uuid.UUID, scope: str = "accessible") -> Select[SessionTemplate]:
    stmt = select(SessionTemplate).where(SessionTemplate.deleted_at.is_(None))
    if scope == "my":
        return stmt.where(SessionTemplate.user_id == user_id)
    if scope == "public":
        return stmt.where(SessionTemplate.is_public.is_(True))
    return stmt.where(
        or_(SessionTemplate.user_id == user_id, SessionTemplate.is_public.is_(True), _shared_with(user_id))
    )


async def get_visible(db: AsyncSession, user_id: uuid.UUID, template_id: uuid.UUID) -> SessionTemplate | None:
    return (await db.scalars(visible_templates(user_id).where(SessionTemplate.id == template_id))).first()


def listing(user_id: uuid.UUID, scope: str, category: str | None) -> Select[SessionTemplate]:
    stmt = visible_templates(user_id, scope)
    if category:
        stmt = stmt.where(SessionTemplate.category == category)
    return stmt.order_by(SessionTemplate.created_at.desc(), SessionTemplate.id)


def search_words(term: str | None) -> list[str]:
    return _WORD.findall((term or "").lower())[:20]


def search(
    dialect: str, user_id: uuid.UUID, scope: str, words: Sequence[str], category: str | None, tags: Sequence[str]
) -> Select[SessionTemplate]:
    """Ranked by the database's full-text index; any of the words matches (as a prefix), more matches rank higher."""
    stmt = visible_templates(user_id, scope)
    if category:
        stmt = stmt.where(SessionTemplate.category == category)
    for tag in tags:  # tags are stored lower-cased as a JSON array; match the quoted element
        stmt = stmt.where(cast(SessionTemplate.tags, String).contains(f'"{tag.lower()}"', autoescape=True))
    if not words:
        return stmt.order_by(SessionTemplate.usage_count.desc(), SessionTemplate.created_at.desc(), SessionTemplate.id)
    if dialect == "postgresql":
        query = " | ".join(f"{w}:*" for w in words)
        vector: ColumnElement[Any] = literal_column(PG_TEMPLATE_VECTOR)
        tsquery = func.to_tsquery(literal_column("'simple'"), query)
        return stmt.where(vector.op("@@")(tsquery)).order_by(func.ts_rank(vector, tsquery).desc(), SessionTemplate.id)
    # SQLite FTS5: bm25 is lower for better matches; name counts most, then tags, then description.
    match = " OR ".join(f'"{w}"*' for w in words)
    fts = table("session_templates_fts", column("rowid"))
    return (
        stmt.join(fts, fts.c.rowid == literal_column("session_templates.rowid"))
        .where(literal_column("session_templates_fts").op("MATCH")(match))
        .order_by(literal_column("bm25(session_templates_fts, 10.0, 5.0, 1.0)"), SessionTemplate.id)
    )


def popular(user_id: uuid.UUID) -> Select[SessionTemplate]:
    return visible_templates(user_id).order_by(
        SessionTemplate.usage_count.desc(), SessionTemplate.last_used_at.desc().nulls_last(), SessionTemplate.id
    )


async def shared_user_ids(db: AsyncSession, template_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await db.scalars(select(TemplateShare.user_id).where(TemplateShare.template_id == template_id))
    return list(rows.all())


async def existing_user_ids(db: AsyncSession, user_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    rows = await db.scalars(select(User.id).where(User.id.in_(list(user_ids))))
    return set(rows.all())


async def replace_shares(db: AsyncSession, template_id: uuid.UUID, user_ids: Sequence[uuid.UUID]) -> None:
    await db.execute(delete(TemplateShare).where(TemplateShare.template_id == template_id))
    db.add_all(TemplateShare(template_id=template_id, user_id=u) for u in dict.fromkeys(user_ids))
    await db.flush()


async def record_use(db: AsyncSession, template_id: uuid.UUID) -> None:
    await db.execute(
        update(SessionTemplate)
        .where(SessionTemplate.id == template_id)
        .values(usage_count=SessionTemplate.usage_count + 1, last_used_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def shares_of(db: AsyncSession, template_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(template id, user id) of every share of these templates."""
    rows = await db.execute(
        select(TemplateShare.template_id, TemplateShare.user_id).where(TemplateShare.template_id.in_(template_ids))
    )
    return [(template_id, user_id) for template_id, user_id in rows.all()]
