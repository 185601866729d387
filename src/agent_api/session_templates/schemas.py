"""Request and response bodies of the session-template routes (field names as DESIGN.md fixes them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from agent_api.agent_settings import SessionSettings, SessionSettingsRead
from agent_api.schema_text import NOT_BLANK

Category = Literal["development", "security", "production", "debugging", "performance", "custom"]
Scope = Literal["my", "public", "accessible"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50, pattern=NOT_BLANK)]
MAX_SEED_FILE_CHARS = 100_000
MAX_SEED_TOTAL_CHARS = 500_000


class SeedFile(BaseModel):
    path: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    content: Annotated[str, StringConstraints(max_length=MAX_SEED_FILE_CHARS)] = ""

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\\" in value or "\x00" in value or str(path) == ".":
            raise ValueError("seed file paths are relative to the working directory and cannot leave it")
        if any(len(part.encode()) > 255 for part in path.parts):
            raise ValueError("each part of a seed file path is at most 255 bytes")
        return str(path)


class TemplateFields(SessionSettings):
    """Everything a template holds; `PUT` replaces all of it."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NOT_BLANK)]
    description: Annotated[str, StringConstraints(max_length=5_000)] | None = None
    category: Category = "custom"
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    is_public: bool = False
    initial_message: Annotated[str, StringConstraints(max_length=50_000)] | None = None
    seed_files: list[SeedFile] = Field(default_factory=list, max_length=50)

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(t.lower() for t in tags))

    @field_validator("seed_files")
    @classmethod
    def _bounded_seeds(cls, files: list[SeedFile]) -> list[SeedFile]:
        if sum(len(f.content) for f in files) > MAX_SEED_TOTAL_CHARS:
            raise ValueError(f"seed files larger than {MAX_SEED_TOTAL_CHARS} characters in total")
        paths = {f.path for f in files}
        if len(paths) != len(files):
            raise ValueError("seed file paths must be unique")
        for path in paths:
            parents = {str(p) for p in PurePosixPath(path).parents}
            if parents & paths:
                raise ValueError(f"seed file {path!r} would sit inside another seed file")
        return files


class TemplateCreate(TemplateFields):
    pass


class TemplateUpdate(TemplateFields):
    pass


class TemplateSharing(BaseModel):
    is_public: bool | None = None
    shared_with_user_ids: list[uuid.UUID] | None = Field(default=None, max_length=200)


class TemplateSearch(BaseModel):
    search_term: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    category: Category | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    scope: Scope = "accessible"
    page: int = Field(default=1, ge=1, le=1_000_000)
    page_size: int = Field(default=20, ge=1, le=100)


class TemplateRead(SessionSettingsRead):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    description: str | None
    category: str
    tags: list[str]
    initial_message: str | None
    seed_files: list[dict[str, str]]
    is_public: bool
    shared_with_user_ids: list[uuid.UUID] = Field(
        default_factory=list, description="Listed for the owner only; empty for everyone else"
    )
    is_owner: bool = False
    usage_count: int
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime
