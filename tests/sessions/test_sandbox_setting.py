"""AGENT_API_SANDBOX=required refuses to start without bubblewrap; off turns the sandbox off even where it exists."""

from __future__ import annotations

import pytest

from agent_api.app import SandboxUnavailable, create_app
from agent_api.runtime import endpoint
from tests.conftest import app_state, make_settings


async def test_required_refuses_to_start_without_bubblewrap(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint, "sandbox_available", lambda: False)
    app = create_app(make_settings(tmp_path_factory.mktemp("data"), database_url, sandbox="required"))
    with pytest.raises(SandboxUnavailable):
        async with app.router.lifespan_context(app):
            pass


async def test_auto_follows_availability_and_off_disables(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint, "sandbox_available", lambda: True)
    for mode, expected in (("auto", True), ("off", False)):
        app = create_app(make_settings(tmp_path_factory.mktemp("data"), database_url, sandbox=mode))
        async with app.router.lifespan_context(app):
            assert app_state(app).bash_sandboxed is expected
