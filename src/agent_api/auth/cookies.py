"""The refresh token as a cookie, for the web console: the page's script never sees it.

`HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page makes the browser send it), `Path` the
auth routes (no other request carries it), `Secure` when the request came over HTTPS (as uvicorn reports it,
proxy headers included: `agent-api serve` trusts `X-Forwarded-Proto` from the addresses in uvicorn's
`FORWARDED_ALLOW_IPS`, loopback by default).
"""

from __future__ import annotations

from fastapi import Request, Response

REFRESH_COOKIE = "agent_api_refresh"
REFRESH_COOKIE_PATH = "/api/v1/auth"
# Within this long of a rotation, the refresh token it replaced still gets an access token when it comes from the
# cookie: two tabs of one browser refreshing at the same moment both send the cookie they had.
REFRESH_COOKIE_GRACE_S = 10.0


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_refresh_cookie(response: Response, request: Request, refresh_token: str, max_age_s: int) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        refresh_token,
        max_age=max_age_s,
        path=REFRESH_COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def clear_refresh_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, secure=_secure(request), httponly=True, samesite="strict"
    )
