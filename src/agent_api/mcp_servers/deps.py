"""`VisibleServer`: an MCP server the caller may see (own or global) by path id, or 404."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import ValidationError

from agent_api import json_input
from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB
from agent_api.errors import ValidationFailed
from agent_api.mcp_servers import service
from agent_api.mcp_servers.schemas import FromTemplate, McpServerCreate
from agent_api.models import McpServer


async def get_visible_server(server_id: uuid.UUID, user: CurrentUser, db: DB) -> McpServer:
    return await service.get_visible(db, user, server_id)


VisibleServer = Annotated[McpServer, Depends(get_visible_server)]


async def create_body(request: Request) -> McpServerCreate | FromTemplate:
    """`POST /mcp-servers` takes a server, or `{"template": id, ...}` to fill in a catalogue template."""
    try:
        data = json_input.loads(await request.body())
    except json_input.TooDeep as exc:
        raise ValidationFailed(str(exc), code="too_deeply_nested") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("The body is not valid JSON", code="invalid_json") from exc
    model: type[McpServerCreate] | type[FromTemplate] = (
        FromTemplate if isinstance(data, dict) and "template" in data else McpServerCreate
    )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        first = details[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValidationFailed(f"Invalid request: {where}: {first['msg']}", details=details) from exc


CreateBody = Annotated[McpServerCreate | FromTemplate, Depends(create_body)]


async def desktop_document(request: Request) -> Any:
    """The import body: a Claude Desktop config as JSON, or as a multipart upload in field `file`."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ValidationFailed("Upload the config file in the multipart field 'file'", code="file_missing")
            return json_input.loads(await upload.read())
        return json_input.loads(await request.body())
    except json_input.TooDeep as exc:
        raise ValidationFailed(str(exc), code="too_deeply_nested") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("The config is not valid JSON", code="invalid_json") from exc


DesktopDocument = Annotated[Any, Depends(desktop_document)]
