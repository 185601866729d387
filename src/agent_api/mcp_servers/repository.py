"""MCP server queries. User-facing ones start from a statement already scoped to what the user may see."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.models import McpServer, Session


def visible_servers(user_id: uuid.UUID) -> Select[McpServer]:
    """The user's own servers plus every global one."""
    return select(McpServer).where(or_(McpServer.user_id == user_id, McpServer.is_global.is_(True)))


async def get_visible(db: AsyncSession, user_id: uuid.UUID, server_id: uuid.UUID) -> McpServer | None:
    return (await db.scalars(visible_servers(user_id).where(McpServer.id == server_id))).first()


async def get_visible_many(db: AsyncSession, user_id: uuid.UUID, server_ids: Sequence[uuid.UUID]) -> list[McpServer]:
    if not server_ids:
        return []
    return list(await db.scalars(visible_servers(user_id).where(McpServer.id.in_(list(server_ids)))))


def list_visible(
    user_id: uuid.UUID, *, server_type: str | None = None, is_enabled: bool | None = None
) -> Select[McpServer]:
    stmt = visible_servers(user_id)
    if server_type is not None:
        stmt = stmt.where(McpServer.server_type == server_type)
    if is_enabled is not None:
        stmt = stmt.where(McpServer.is_enabled.is_(is_enabled))
    return stmt.order_by(McpServer.name, McpServer.id)


async def get_by_name(db: AsyncSession, user_id: uuid.UUID, name: str) -> McpServer | None:
    return (await db.scalars(select(McpServer).where(McpServer.user_id == user_id, McpServer.name == name))).first()


async def list_owned(db: AsyncSession, user_id: uuid.UUID) -> list[McpServer]:
    return list(await db.scalars(select(McpServer).where(McpServer.user_id == user_id).order_by(McpServer.name)))


async def sessions_with_servers(db: AsyncSession, statuses: Sequence[str]) -> list[tuple[uuid.UUID, str, list[str]]]:
    """(session id, status, attached server ids) of sessions in `statuses` that have any MCP server attached.

    Filtered in Python: JSON containment is spelled differently on every backend, and few sessions run at once.
    """
    stmt = select(Session.id, Session.status, Session.mcp_server_ids).where(Session.status.in_(list(statuses)))
    return [(sid, status, list(ids or [])) for sid, status, ids in (await db.execute(stmt)).all() if ids]
