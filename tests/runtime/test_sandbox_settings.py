"""The sandbox settings the runtime gives the CLI hold on their own, with no hook of ours in the way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage

from agent_api.runtime.agent import RuntimeConfig, cli_permission_mode, sandbox_settings
from agent_api.runtime.endpoint import sandbox_available

pytestmark = pytest.mark.slow


def test_no_way_out_is_left_open(tmp_path: Path) -> None:
    settings = sandbox_settings(RuntimeConfig(env={}, config_dir=tmp_path, bash_sandboxed=True), tmp_path)
    assert settings is not None
    assert settings["enabled"] is True and settings["allowUnsandboxedCommands"] is False
    assert settings["excludedCommands"] == [] and settings["enableWeakerNestedSandbox"] is False
    assert sandbox_settings(RuntimeConfig(env={}, config_dir=tmp_path, bash_sandboxed=False), tmp_path) is None
    # The CLI's bypassPermissions would approve the sandbox proxy's hosts before asking us.
    assert cli_permission_mode("bypassPermissions") == "default"
    assert cli_permission_mode("acceptEdits") == "acceptEdits"


@pytest.mark.skipif(not sandbox_available(), reason="bubblewrap and socat are not installed (CI installs them)")
async def test_the_cli_keeps_an_opted_out_command_inside(
    sdk_options: Callable[..., ClaudeAgentOptions], tmp_path_factory: pytest.TempPathFactory
) -> None:
    private = tmp_path_factory.mktemp("private")
    (private / "secret.txt").write_text("NOT-FOR-AGENTS")
    config = RuntimeConfig(env={}, config_dir=private, bash_sandboxed=True, private_paths=(str(private),))
    options = sdk_options(sandbox=sandbox_settings(config, Path(sdk_options().cwd or ".")))
    results: list[str] = []
    async with ClaudeSDKClient(options) as client:
        await client.query(f"run-unsandboxed: cat {private}/secret.txt")
        async for message in client.receive_response():
            if isinstance(message, ResultMessage):
                results.append(message.result or "")
    assert results and "NOT-FOR-AGENTS" not in results[0]
    assert "No such file" in results[0] or "denied" in results[0].lower()
