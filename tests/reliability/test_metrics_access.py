"""Who may scrape `GET /metrics`: the token when one is set, else loopback clients only, unless made public.

In process, over ASGI, with the client address set per request (uvicorn puts the peer, or the address a trusted
proxy forwarded, in the same place)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import app_state, assert_error_shape, make_client

LOOPBACK = ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1")
REMOTE = ("10.1.2.3", "192.168.0.7", "203.0.113.5", "2001:db8::1", "::ffff:10.0.0.1", "testclient")


@pytest.fixture
def make_app(app: object) -> Iterator[Callable[..., object]]:
    """The module's app with the metrics settings a test names (the route reads them per request)."""
    settings = app_state(app).settings
    saved = settings.metrics_token, settings.metrics_public

    def configure(metrics_token: str | None = None, metrics_public: bool = False) -> object:
        settings.metrics_token, settings.metrics_public = metrics_token, metrics_public
        return app

    yield configure
    settings.metrics_token, settings.metrics_public = saved


async def status_from(application: object, ip: str, **headers: str) -> int:
    async with make_client(application, ip) as c:
        r = await c.get("/metrics", headers=headers)
        if r.status_code != 200:
            assert_error_shape(r, r.status_code)
        else:
            assert "agent_api_http_requests_total" in r.text
        return r.status_code


class TestWithoutToken:
    @pytest.mark.parametrize("ip", LOOPBACK)
    async def test_loopback_clients_are_answered(self, make_app: Callable[..., object], ip: str) -> None:
        assert await status_from(make_app(), ip) == 200

    @pytest.mark.parametrize("ip", REMOTE)
    async def test_other_clients_get_the_404_of_an_unknown_path(self, make_app: Callable[..., object], ip: str) -> None:
        application = make_app()
        assert await status_from(application, ip) == 404
        async with make_client(application, ip) as c:
            unknown = await c.get("/no-such-path")
            hidden = await c.get("/metrics")
        assert hidden.json()["error"]["message"] == unknown.json()["error"]["message"]
        assert hidden.json()["error"]["code"] == unknown.json()["error"]["code"]

    @pytest.mark.parametrize("ip", ("203.0.113.5", "127.0.0.1"))
    async def test_public_answers_everyone(self, make_app: Callable[..., object], ip: str) -> None:
        assert await status_from(make_app(metrics_public=True), ip) == 200


class TestWithToken:
    @pytest.mark.parametrize("ip", ("127.0.0.1", "203.0.113.5"))
    async def test_the_token_is_required_from_everywhere(self, make_app: Callable[..., object], ip: str) -> None:
        application = make_app(metrics_token="scrape-secret", metrics_public=True)
        assert await status_from(application, ip) == 401
        assert await status_from(application, ip, Authorization="Bearer wrong") == 401
        assert await status_from(application, ip, Authorization="scrape-secret") == 401
        assert await status_from(application, ip, Authorization="Bearer scrape-secret") == 200
