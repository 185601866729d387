"""HTTP routes of reports."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["reports"])
