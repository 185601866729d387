"""The permission rules on their own: path guard (Glob patterns included), rules, modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_api.runtime import permissions
from agent_api.runtime.permissions import decide, path_guard, rule_matches


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        ("Read", {"file_path": "/etc/passwd"}),
        ("Write", {"file_path": "../escape.txt", "content": "x"}),
        ("Glob", {"pattern": "/etc/**"}),
        ("Glob", {"pattern": "../../**/*.env"}),
        ("Glob", {"pattern": "*.py", "path": "/etc"}),
        ("Grep", {"pattern": "root", "path": "/etc"}),
        ("LS", {"path": "/"}),
        ("NotebookRead", {"notebook_path": "/tmp/x.ipynb"}),
        ("NotebookEdit", {"notebook_path": "../x.ipynb"}),
        ("Glob", {"pattern": 42}),
    ],
)
def test_outside_paths_are_denied(cwd: Path, tool: str, tool_input: dict[str, object]) -> None:
    verdict = path_guard(cwd, tool, tool_input)
    assert verdict is not None and verdict.decision == "deny" and verdict.decided_by == "path_guard"


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        ("Read", {"file_path": "src/a.py"}),
        ("Glob", {"pattern": "**/*.py"}),
        ("Glob", {"pattern": "src/**/*.py"}),
        ("Glob", {"pattern": "*.py", "path": "src"}),
        ("Grep", {"pattern": "TODO"}),
        ("Bash", {"command": "cat /etc/passwd"}),  # Bash is the sandbox's business, not the path guard's
    ],
)
def test_inside_paths_pass(cwd: Path, tool: str, tool_input: dict[str, object]) -> None:
    assert path_guard(cwd, tool, tool_input) is None


def test_rules_and_modes(cwd: Path) -> None:
    assert rule_matches("Bash(git:*)", "Bash", {"command": "git status"})
    assert not rule_matches("Bash(git:*)", "Bash", {"command": "rm -rf /"})
    common = {"cwd": cwd, "allowed": [], "disallowed": [], "bash_sandboxed": False}
    write = {"tool_name": "Write", "tool_input": {"file_path": "a.txt", "content": "x"}}
    assert decide(mode="default", **common, **write) is None  # a person decides
    assert decide(mode="acceptEdits", **common, **write).decided_by == "mode"  # type: ignore[union-attr]
    assert decide(mode="plan", **common, **write).decision == "deny"  # type: ignore[union-attr]
    denied = decide(mode="bypassPermissions", **{**common, "disallowed": ["Write"]}, **write)
    assert denied is not None and (denied.decision, denied.decided_by) == ("deny", "rule")


class TestSandboxAndNetworkChecks:
    def test_the_opt_out_is_refused_only_when_sandboxed(self) -> None:
        call = {"command": "id", "dangerouslyDisableSandbox": True}
        verdict = permissions.leaves_sandbox("Bash", call, bash_sandboxed=True)
        assert verdict is not None and (verdict.decision, verdict.decided_by) == ("deny", "sandbox")
        assert permissions.leaves_sandbox("Bash", {"command": "id"}, bash_sandboxed=True) is None
        assert permissions.leaves_sandbox("Bash", call, bash_sandboxed=False) is None

    def test_network_targets_of_each_tool(self) -> None:
        assert permissions.network_targets("WebFetch", {"url": "http://x.example/"}) == ["http://x.example/"]
        assert permissions.network_targets("SandboxNetworkAccess", {"host": "::1"}) == ["http://[::1]/"]
        nested = {"a": [{"b": " https://inner.example/path "}], "note": "see http://not-a-target in prose"}
        assert permissions.network_targets("mcp__fetch__get", nested) == ["https://inner.example/path"]
        assert permissions.network_targets("Bash", {"command": "curl http://127.0.0.1"}) == []

    @pytest.mark.parametrize(
        ("tool", "tool_input"),
        [
            ("WebFetch", {"url": "http://localhost:8000/"}),
            ("WebFetch", {"url": "http://2130706433/"}),
            ("WebFetch", {"url": "http://169.254.169.254/latest/meta-data/"}),
            ("WebFetch", {"url": "http://metadata.google.internal/"}),
            ("WebFetch", {"url": "http://[::ffff:127.0.0.1]/"}),
            ("WebFetch", {"url": "file:///etc/passwd"}),
            ("SandboxNetworkAccess", {"host": "127.0.0.1"}),
            ("SandboxNetworkAccess", {"host": "10.1.2.3"}),
            ("mcp__fetch__get", {"request": {"url": "ws://127.0.0.1:5432/"}}),
        ],
    )
    async def test_internal_targets_are_denied(self, tool: str, tool_input: dict[str, object]) -> None:
        verdict = await permissions.network_guard(tool, tool_input)
        assert verdict is not None and (verdict.decision, verdict.decided_by) == ("deny", "sandbox")

    async def test_public_literal_targets_pass(self) -> None:
        assert await permissions.network_guard("WebFetch", {"url": "https://93.184.216.34/"}) is None
        assert await permissions.network_guard("SandboxNetworkAccess", {"host": "2606:4700::1111"}) is None
