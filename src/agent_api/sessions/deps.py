"""`OwnedSession`: the caller's session by path id, or 404 (another user's session is indistinguishable from none);
`DownloadableSession` the same for the download routes, whose caller may come with a download ticket."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from agent_api.auth.deps import CurrentUser, DownloadUser
from agent_api.deps import DB
from agent_api.models import Session
from agent_api.sessions import service


async def get_owned_session(session_id: uuid.UUID, user: CurrentUser, db: DB) -> Session:
    return await service.get_owned(db, user, session_id)


OwnedSession = Annotated[Session, Depends(get_owned_session)]


async def get_downloadable_session(session_id: uuid.UUID, user: DownloadUser, db: DB) -> Session:
    return await service.get_owned(db, user, session_id)


DownloadableSession = Annotated[Session, Depends(get_downloadable_session)]
