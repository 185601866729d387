"""The sandbox settings the runtime gives the CLI hold on their own, with no hook of ours in the way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, UserMessage
from claude_agent_sdk.types import ToolResultBlock

from agent_api.runtime import confine
from agent_api.runtime.agent import RuntimeConfig
from agent_api.runtime.confine import cli_permission_mode, sandbox_settings
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


@pytest.mark.skipif(not sandbox_available(), reason="bubblewrap and socat are not installed (CI installs them)")
async def test_the_confined_cli_cannot_open_the_data_dir_even_through_a_link(
    sdk_options: Callable[..., ClaudeAgentOptions], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What a swapped link would reach, the CLI's own file tools cannot open: no hook of ours in the way."""
    data = tmp_path_factory.mktemp("data")
    (data / "secret_key").write_text("NOT-FOR-AGENTS")
    cwd = Path(sdk_options().cwd or ".")
    (cwd / "link").symlink_to(data)
    (cwd / "mine.txt").write_text("my own file")
    wrappers = tmp_path_factory.mktemp("wrappers")
    cli = confine.write_wrapper(
        wrappers, [str(data)], [cwd.resolve(), Path(str(sdk_options().env["CLAUDE_CONFIG_DIR"]))]
    )
    assert cli is not None
    options = sdk_options(cli_path=cli)
    results: list[str] = []
    async with ClaudeSDKClient(options) as client:
        await client.query(f"read {data}/secret_key\nread {cwd}/link/secret_key\nread {cwd}/mine.txt")
        async for message in client.receive_response():
            if isinstance(message, UserMessage) and isinstance(message.content, list):
                results += [str(b.content) for b in message.content if isinstance(b, ToolResultBlock)]
    assert len(results) == 3
    assert not any("NOT-FOR-AGENTS" in r for r in results)
    assert "my own file" in results[2]
    assert (data / "secret_key").read_text() == "NOT-FOR-AGENTS"  # hidden in its world, untouched in ours
