"""HTTP routes of mcp servers."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/mcp-servers", tags=["mcp servers"])
