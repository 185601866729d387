"""Confining the agent CLI: its Bash sandbox's settings, its permission mode, and the CLI process itself run
where the server's data is not there.

The CLI's file tools (Read, Write, Edit...) run in the CLI process, outside the Bash sandbox. The path guard checks
each path before the call, but the CLI opens it afterwards, and an agent's Bash can swap a directory for a link in
between. So the CLI process is started in a mount namespace of its own (bubblewrap, as the Bash sandbox is): the
data dir and the other agents' temporary directories are empty there, and only the session's own working
directory, its temporary directory and the CLI's state directory are mounted back. Whatever a path resolves to
when the CLI opens it, the secret key, the database and other sessions' files do not exist in its world.

It also gets a process namespace of its own, with a /proc that shows only its own processes. Without it, a program
the CLI starts (an MCP stdio server, a file tool raced through a link) reads the host's files as another process
sees them, through `/proc/<server pid>/root/...`. bubblewrap's own `--unshare-pid` would do, but then the Bash
sandbox the CLI nests inside cannot mount its /proc; `unshare --mount-proc` inside bubblewrap leaves that possible.
When the namespace dies (the CLI exits or is killed), every process in it dies too: no sandbox bridge or MCP server
outlives its agent.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from claude_agent_sdk.types import SandboxSettings  # the SDK is imported with the first agent (`runtime.agent`)

    from agent_api.runtime.agent import RuntimeConfig

log = logging.getLogger("agent_api.runtime")


def bundled_cli() -> str | None:
    """The agent CLI the SDK would start."""
    sdk = importlib.util.find_spec("claude_agent_sdk")  # located, not imported (`runtime.agent` imports it)
    bundled = Path(sdk.origin).parent / "_bundled" / "claude" if sdk and sdk.origin else None
    return str(bundled) if bundled and bundled.is_file() else shutil.which("claude")


def bwrap_arguments(hidden: list[str], mounted: list[Path]) -> list[str]:
    """bubblewrap's arguments: the host as it is, minus `hidden` (directories emptied, files replaced by an empty
    one), plus `mounted` back inside them."""
    args = ["--dev-bind", "/", "/", "--die-with-parent"]
    for path in hidden:
        if os.path.isdir(path):
            args += ["--tmpfs", path]
        elif os.path.lexists(path):
            args += ["--ro-bind", "/dev/null", path]
    for mount in mounted:
        args += ["--bind", str(mount), str(mount)]
    return args


def _own_pid_namespace_command() -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    return [unshare, "--pid", "--fork", "--mount-proc", "--kill-child", "--"]


@functools.cache
def own_pid_namespace_available() -> bool:
    """Whether a process confined by bubblewrap here may make its own process namespace (it needs privileges a
    server started as an unprivileged user may not have: then the CLI runs without one, and the log says so)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None or shutil.which("unshare") is None:
        return False
    probe = [bwrap, "--dev-bind", "/", "/", "--die-with-parent", "--", *_own_pid_namespace_command(), "true"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=15, check=False).returncode == 0  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        log.warning(
            "the agent CLI runs without a process namespace of its own (unshare --pid failed under bubblewrap): "
            "processes it starts can see the host's /proc"
        )
    return ok


def write_wrapper(directory: Path, hidden: list[str], mounted: list[Path]) -> str | None:
    """An executable in `directory` that starts the CLI confined (the SDK takes one path, no arguments);
    None when bubblewrap or the CLI cannot be found."""
    bwrap, cli = shutil.which("bwrap"), bundled_cli()
    if bwrap is None or cli is None:
        return None
    inner = [*_own_pid_namespace_command(), cli] if own_pid_namespace_available() else [cli]
    command = shlex.join([bwrap, *bwrap_arguments(hidden, [m for m in mounted if m.exists()]), "--", *inner])
    wrapper = directory / "claude-confined"
    fd = os.open(wrapper, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(f'#!/bin/sh\nexec {command} "$@"\n')
    return str(wrapper)


def sandbox_settings(config: RuntimeConfig, cwd: Path, tmp: Path | None = None) -> SandboxSettings | None:
    """The CLI's Bash sandbox, with every way out closed: no command may ask to run outside it
    (`dangerouslyDisableSandbox` is ignored), none is excluded from it, no weaker nested mode."""
    if not config.bash_sandboxed:
        return None
    sandbox: SandboxSettings = {
        "enabled": True,
        "autoAllowBashIfSandboxed": True,
        "allowUnsandboxedCommands": False,
        "excludedCommands": [],
        "enableWeakerNestedSandbox": False,
    }
    if config.private_paths:
        # The CLI reads `filesystem` although the SDK's TypedDict does not list it yet.
        readable = [str(cwd)] + ([str(tmp)] if tmp is not None else [])
        sandbox["filesystem"] = {"denyRead": list(config.private_paths), "allowRead": readable}  # type: ignore[typeddict-unknown-key]
    return sandbox


def cli_permission_mode(mode: str) -> str:
    """The mode the CLI runs in. Its own `bypassPermissions` approves everything before `can_use_tool` is asked,
    including the hosts its sandbox network proxy lets sandboxed Bash reach (loopback among them): the CLI runs
    such sessions in `default` and our hook and `can_use_tool` approve as bypassPermissions would, minus that."""
    return "default" if mode == "bypassPermissions" else mode
