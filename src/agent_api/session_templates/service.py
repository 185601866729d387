"""Template rules: who sees and changes what, search, sharing, and applying a template to a new session."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.agent_settings import SessionSettings
from agent_api.errors import Forbidden, NotFound, ValidationFailed
from agent_api.mcp_servers import service as mcp_service
from agent_api.models import SessionTemplate, User
from agent_api.models.base import utcnow
from agent_api.pagination import Page, PageParams, paged
from agent_api.session_templates import repository as repo
from agent_api.session_templates.schemas import TemplateFields, TemplateRead, TemplateSearch, TemplateSharing

# The session settings a template carries; on `POST /sessions` a field the client sets wins over the template's.
SESSION_FIELDS = (
    "system_prompt",
    "allowed_tools",
    "disallowed_tools",
    "blocked_commands",
    "permission_mode",
    "permission_timeout_s",
    "on_permission_timeout",
    "sdk_options",
    "mcp_server_ids",
)


async def _checked_values(db: AsyncSession, user: User, body: TemplateFields) -> dict[str, object]:
    servers = await mcp_service.check_attachable(db, user, body.mcp_server_ids)
    values = body.model_dump(exclude={"mcp_server_ids", "sdk_options", "seed_files"})
    values["mcp_server_ids"] = [str(s) for s in servers]
    values["sdk_options"] = body.sdk_options.model_dump(exclude_none=True)
    values["seed_files"] = [f.model_dump() for f in body.seed_files]
    return values


async def create(db: AsyncSession, user: User, body: TemplateFields) -> SessionTemplate:
    template = SessionTemplate(id=uuid.uuid4(), user_id=user.id, **await _checked_values(db, user, body))
    db.add(template)
    await db.flush()
    return template


async def get_visible(db: AsyncSession, user: User, template_id: uuid.UUID) -> SessionTemplate:
    template = await repo.get_visible(db, user.id, template_id)
    if template is None:
        raise NotFound("Template not found", code="template_not_found")
    return template


async def get_for_change(db: AsyncSession, user: User, template_id: uuid.UUID) -> SessionTemplate:
    """Only the owner edits, shares or deletes; others who can see it get 403, the rest 404."""
    template = await get_visible(db, user, template_id)
    if template.user_id != user.id:
        raise Forbidden("Only the template's owner can change it", code="not_template_owner")
    return template


async def replace(db: AsyncSession, user: User, template: SessionTemplate, body: TemplateFields) -> SessionTemplate:
    for field, value in (await _checked_values(db, user, body)).items():
        setattr(template, field, value)
    template.updated_at = utcnow()
    await db.flush()
    return template


async def soft_delete(db: AsyncSession, template: SessionTemplate) -> None:
    template.deleted_at = utcnow()
    await db.flush()


async def update_sharing(db: AsyncSession, template: SessionTemplate, body: TemplateSharing) -> SessionTemplate:
    if body.is_public is not None:
        template.is_public = body.is_public
    if body.shared_with_user_ids is not None:
        wanted = [u for u in dict.fromkeys(body.shared_with_user_ids) if u != template.user_id]
        unknown = set(wanted) - await repo.existing_user_ids(db, wanted)
        if unknown:
            raise ValidationFailed(
                "Unknown user in shared_with_user_ids",
                code="user_not_found",
                details={"user_ids": sorted(str(u) for u in unknown)},
            )
        await repo.replace_shares(db, template.id, wanted)
    template.updated_at = utcnow()
    await db.flush()
    return template


async def to_reads(db: AsyncSession, user: User, templates: Sequence[SessionTemplate]) -> list[TemplateRead]:
    """Read models; the owner also sees whom each template is shared with (one query for the whole page)."""
    owned = [t.id for t in templates if t.user_id == user.id]
    shares: dict[uuid.UUID, list[uuid.UUID]] = {}
    if owned:
        for template_id, user_id in await repo.shares_of(db, owned):
            shares.setdefault(template_id, []).append(user_id)
    reads = []
    for t in templates:
        read = TemplateRead.model_validate(t)
        read.is_owner = t.user_id == user.id
        read.shared_with_user_ids = shares.get(t.id, [])
        reads.append(read)
    return reads


async def search(db: AsyncSession, user: User, body: TemplateSearch) -> Page[TemplateRead]:
    """Ranked full-text search over the templates the user can see, one page of it."""
    stmt = repo.search(
        db.get_bind().dialect.name,
        user.id,
        body.scope,
        repo.search_words(body.search_term),
        body.category,
        body.tags,
    )
    return await paged(db, stmt, PageParams(body.page, body.page_size), partial(to_reads, db, user))


SettingsT = TypeVar("SettingsT", bound=SessionSettings)


@dataclass(frozen=True)
class AppliedTemplate(Generic[SettingsT]):
    settings: SettingsT
    template: SessionTemplate


async def apply_to_session(
    db: AsyncSession, user: User, template_id: uuid.UUID, body: SettingsT
) -> AppliedTemplate[SettingsT]:
    """The session body with the template's settings filled in where the client left them out; counts the use."""
    template = await repo.get_visible(db, user.id, template_id)
    if template is None:
        raise ValidationFailed("Unknown template", code="template_not_found", details={"template_id": str(template_id)})
    values = body.model_dump(exclude_unset=True)
    for field in SESSION_FIELDS:
        if field not in body.model_fields_set:
            values[field] = getattr(template, field)
    if "description" not in body.model_fields_set and template.description:
        values["description"] = template.description
    if "name" not in body.model_fields_set:
        values["name"] = template.name
    merged = type(body).model_validate(values)
    await repo.record_use(db, template.id)
    return AppliedTemplate(merged, template)
