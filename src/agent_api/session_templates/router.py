"""`/session-templates`: the 8 template endpoints of the inventory."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB
from agent_api.pagination import Page, PageParams, Pagination, fetch_page
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
    rows, total = await fetch_page(db, repo.listing(user.id, scope, category), params)
    return Page[TemplateRead].build(await service.to_reads(db, user, rows), total, params)


@router.post("/search", response_model=Page[TemplateRead])
async def search_templates(body: TemplateSearch, user: CurrentUser, db: DB) -> Page[TemplateRead]:
    rows, total, params = await service.search(db, user, body)
    return Page[TemplateRead].build(await service.to_reads(db, user, rows), total, params)


@router.get("/popular/top", response_model=Page[TemplateRead])
async def popular_templates(
    user: CurrentUser, db: DB, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> Page[TemplateRead]:
    """The list envelope like every list: one page of `limit` items, `total` counting every visible template."""
    params = PageParams(1, limit)
    rows, total = await fetch_page(db, repo.popular(user.id), params)
    return Page[TemplateRead].build(await service.to_reads(db, user, rows), total, params)


@router.get("/{template_id}", response_model=TemplateRead)
async def get_template(template: VisibleTemplate, user: CurrentUser, db: DB) -> TemplateRead:
    return (await service.to_reads(db, user, [template]))[0]


@router.put("/{template_id}", response_model=TemplateRead)
async def replace_template(template: OwnTemplate, body: TemplateUpdate, user: CurrentUser, db: DB) -> TemplateRead:
    updated = await service.replace(db, user, template, body)
    return (await service.to_reads(db, user, [updated]))[0]


@router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(template: OwnTemplate, db: DB) -> None:
    await service.soft_delete(db, template)


@router.patch("/{template_id}/sharing", response_model=TemplateRead)
async def share_template(template: OwnTemplate, body: TemplateSharing, user: CurrentUser, db: DB) -> TemplateRead:
    updated = await service.update_sharing(db, template, body)
    return (await service.to_reads(db, user, [updated]))[0]
