"""Fixtures for driving the real claude-agent-sdk and CLI against the offline model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions

from agent_api.runtime.offline_model import OfflineModel, cli_env


@pytest.fixture(scope="module")
def offline_model() -> Iterator[OfflineModel]:
    """One offline model per test module, served from a background thread."""
    model = OfflineModel()
    model.start_in_thread()
    try:
        yield model
    finally:
        model.stop_thread()


@pytest.fixture(scope="module")
def claude_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("claude-config")


@pytest.fixture
def sdk_options(
    offline_model: OfflineModel, claude_config_dir: Path, tmp_path: Path
) -> Callable[..., ClaudeAgentOptions]:
    """Build options for a CLI that runs in ``tmp_path`` against the offline model, isolated from the host."""

    def build(**overrides: Any) -> ClaudeAgentOptions:
        env = cli_env(offline_model.base_url) | {
            "CLAUDE_CONFIG_DIR": str(claude_config_dir),
            "IS_SANDBOX": "1",  # bypassPermissions refuses to run as root without it
        }
        values: dict[str, Any] = {
            "cwd": str(tmp_path),
            "env": env,
            "setting_sources": [],
            "permission_mode": "bypassPermissions",
        }
        values.update(overrides)
        return ClaudeAgentOptions(**values)

    return build
