"""`/` and `/console/...`: the console's page and its modules, under a strict Content-Security-Policy.

Out of the OpenAPI document, and never in the way of `/api/...` (whose unknown paths stay JSON 404s), `/docs` or
`/metrics`. Files come only from the package's `static` folder; anything else is a 404.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from agent_api.errors import NotFound

STATIC = (Path(__file__).parent / "static").resolve()
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is small; always the one that matches the installed server.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> Response:
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=HEADERS)


@router.get("/")
async def console_page() -> Response:
    return _file(STATIC / "index.html")


@router.get("/console/{asset:path}")
async def console_asset(asset: str) -> Response:
    path = (STATIC / asset).resolve()
    if not path.is_relative_to(STATIC) or path.suffix not in CONTENT_TYPES or not path.is_file():
        raise NotFound("No such console file", code="not_found")
    return _file(path)
