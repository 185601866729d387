"""`OwnedReport`: the caller's report by path id, or 404 (another user's report is indistinguishable from none);
`DownloadableReport` the same for the download route, whose caller may come with a download ticket."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from agent_api.auth.deps import CurrentUser, DownloadUser
from agent_api.deps import DB
from agent_api.models import Report
from agent_api.reports import service


async def get_owned_report(report_id: uuid.UUID, user: CurrentUser, db: DB) -> Report:
    return await service.get_owned(db, user, report_id)


OwnedReport = Annotated[Report, Depends(get_owned_report)]


async def get_downloadable_report(report_id: uuid.UUID, user: DownloadUser, db: DB) -> Report:
    return await service.get_owned(db, user, report_id)


DownloadableReport = Annotated[Report, Depends(get_downloadable_report)]
