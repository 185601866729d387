"""All ORM models, imported here so the metadata is complete for Alembic."""

from agent_api.models.base import Base
from agent_api.models.user import ApiKey, RefreshTokenFamily, User

__all__ = ["ApiKey", "Base", "RefreshTokenFamily", "User"]
