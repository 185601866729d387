"""`OwnedTask` and `OwnedExecution`: the caller's rows by path id, or 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB
from agent_api.models import Task, TaskExecution
from agent_api.tasks import service


async def _task(task_id: uuid.UUID, user: CurrentUser, db: DB) -> Task:
    return await service.get_owned(db, user, task_id)


async def _execution(execution_id: uuid.UUID, user: CurrentUser, db: DB) -> TaskExecution:
    return await service.get_owned_execution(db, user, execution_id)


OwnedTask = Annotated[Task, Depends(_task)]
OwnedExecution = Annotated[TaskExecution, Depends(_execution)]
