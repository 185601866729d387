"""HTTP routes of session templates."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/session-templates", tags=["session templates"])
