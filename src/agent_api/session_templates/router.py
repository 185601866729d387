"""`/session-templates`: the 8 template endpoints of the inventory."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, status

from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB
from agent_api.pagination import Page, PageParams, Pagination, paged
from agent_api.session_templates import repository as repo
from agent_api.session_templates import service
from agent_api.session_templates.deps import OwnTemplate, VisibleTemplate
from agent_api.session_templates.schemas import (
    Category,
    Scope,
    TemplateCreate,
    TemplateRead,
    TemplateSearch,
    TemplateSharing,
    TemplateUpdate,
)

router = APIRouter(prefix="/session-templates", tags=["session templates"])


@router.post("", response_model=TemplateRead, status_code=status.HTTP_201_CREATED)
async def create_template(body: TemplateCreate, user: CurrentUser, db: DB) -> TemplateRead:
    """Create a session template owned by the caller (201). 422 when an MCP server in `mcp_server_ids`
    is unknown or disabled, or the seed files are invalid."""
    template = await service.create(db, user, body)
    return (await service.to_reads(db, user, [template]))[0]


@router.get("", response_model=Page[TemplateRead])
async def list_templates(
    user: CurrentUser,
    db: DB,
    params: Pagination,
    scope: Scope = "accessible",
    category: Annotated[Category | None, Query()] = None,
) -> Page[TemplateRead]:
    """Templates the caller can see, newest first: `?scope=my|public|accessible` (default accessible: own,
    public and shared with the caller), `?category=`."""
    return await paged(db, repo.listing(user.id, scope, category), params, partial(service.to_reads, db, user))


@router.post("/search", response_model=Page[TemplateRead])
async def search_templates(body: TemplateSearch, user: CurrentUser, db: DB) -> Page[TemplateRead]:
    """Full-text search of the templates the caller can see, best match first (name, then tags, then
    description; words match as prefixes); filters `category`, `tags`, `scope`. Without a term, most used first."""
    return await service.search(db, user, body)


@router.get("/popular/top", response_model=Page[TemplateRead])
async def popular_templates(
    user: CurrentUser, db: DB, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> Page[TemplateRead]:
    """The list envelope like every list: one page of `limit` items, `total` counting every visible template."""
    return await paged(db, repo.popular(user.id), PageParams(1, limit), partial(service.to_reads, db, user))


@router.get("/{template_id}", response_model=TemplateRead)
async def get_template(template: VisibleTemplate, user: CurrentUser, db: DB) -> TemplateRead:
    """One template the caller can see (own, public or shared with them); 404 otherwise."""
    return (await service.to_reads(db, user, [template]))[0]


@router.put("/{template_id}", response_model=TemplateRead)
async def replace_template(template: OwnTemplate, body: TemplateUpdate, user: CurrentUser, db: DB) -> TemplateRead:
    """Replace every field of a template. Owner only: 403 `not_template_owner` for others who can see
    it, 404 for the rest; 422 for an unknown or disabled MCP server."""
    updated = await service.replace(db, user, template, body)
    return (await service.to_reads(db, user, [updated]))[0]


@router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(template: OwnTemplate, db: DB) -> None:
    """Delete a template (204): hidden from lists and lookups, kept for the sessions made from it. Owner
    only: 403 for others who can see it, 404 for the rest."""
    await service.soft_delete(db, template)


@router.patch("/{template_id}/sharing", response_model=TemplateRead)
async def share_template(template: OwnTemplate, body: TemplateSharing, user: CurrentUser, db: DB) -> TemplateRead:
    """Set `is_public` and whom the template is shared with (`shared_with_user_ids` replaces the list).
    Owner only: 403 for others who can see it, 404 for the rest; 422 `user_not_found` for an unknown user."""
    updated = await service.update_sharing(db, template, body)
    return (await service.to_reads(db, user, [updated]))[0]
