"""`VisibleTemplate` (readable by the caller, else 404) and `OwnTemplate` (also changeable, else 403)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB
from agent_api.models import SessionTemplate
from agent_api.session_templates import service


async def _visible(template_id: uuid.UUID, user: CurrentUser, db: DB) -> SessionTemplate:
    return await service.get_visible(db, user, template_id)


async def _own(template_id: uuid.UUID, user: CurrentUser, db: DB) -> SessionTemplate:
    return await service.get_for_change(db, user, template_id)


VisibleTemplate = Annotated[SessionTemplate, Depends(_visible)]
OwnTemplate = Annotated[SessionTemplate, Depends(_own)]
