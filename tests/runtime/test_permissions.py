"""The permission rules on their own: path guard (Glob patterns included), rules, modes."""

from __future__ import annotations

from pathlib import Path

import pytest

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
