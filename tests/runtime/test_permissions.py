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
        nested = {"a": [{"b": " https://inner.example/path "}], "note": "see http://in.prose/x too"}
        assert permissions.network_targets("mcp__fetch__get", nested) == [
            "https://inner.example/path",
            "http://in.prose/x",
        ]
        lax = {"u": "http:/\\127.0.0.1/", "v": "//10.0.0.1/x", "host": "::1", "http://key.example/": 1}
        assert set(permissions.network_targets("mcp__fetch__get", lax)) == {
            "http://127.0.0.1/",
            "http://10.0.0.1/x",
            "http://[::1]/",
            "http://key.example/",
        }
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
            ("mcp__fetch__get", {"url": "file:///etc/passwd"}),
            ("mcp__fetch__get", {"url": "gopher://example.com/"}),
            ("mcp__fetch__get", {"text": "fetch http://169.254.169.254/latest please"}),
            ("mcp__db__query", {"host": "127.0.0.1", "port": 5432}),
            ("mcp__fetch__get", {"urls": ["https://93.184.216.34/"] * 20 + ["http://127.0.0.1/"]}),
            ("mcp__fetch__get", {"a": [[[[[[[[[["https://93.184.216.34/"]]]]]]]]]]}),
            ("WebFetch", {"url": "http://[2002:7f00:1::]/"}),
        ],
    )
    async def test_internal_targets_are_denied(self, tool: str, tool_input: dict[str, object]) -> None:
        verdict = await permissions.network_guard(tool, tool_input)
        assert verdict is not None and (verdict.decision, verdict.decided_by) == ("deny", "sandbox")

    async def test_public_literal_targets_pass(self) -> None:
        assert await permissions.network_guard("WebFetch", {"url": "https://93.184.216.34/"}) is None
        assert await permissions.network_guard("SandboxNetworkAccess", {"host": "2606:4700::1111"}) is None


class TestPathsThroughLinks:
    """The CLI opens a path after the check, outside the sandbox: a link on the way could be swapped in between."""

    def test_a_path_through_a_link_is_refused_even_inside(self, tmp_path: Path) -> None:
        (tmp_path / "real").mkdir()
        (tmp_path / "real" / "notes.txt").write_text("x")
        (tmp_path / "link").symlink_to(tmp_path / "real")
        for raw in ("link/notes.txt", str(tmp_path / "link" / "notes.txt"), "real/../link/notes.txt"):
            verdict = path_guard(tmp_path, "Read", {"file_path": raw})
            assert verdict is not None and verdict.decided_by == "path_guard" and "symbolic link" in verdict.reason
        assert path_guard(tmp_path, "Read", {"file_path": "real/notes.txt"}) is None
        assert path_guard(tmp_path, "Write", {"file_path": "real/new/deeper.txt"}) is None  # not there yet

    def test_path_fields_of_tools_the_guard_does_not_know(self, tmp_path: Path) -> None:
        outside = path_guard(tmp_path, "Workflow", {"scriptPath": "/etc/passwd", "name": "x"})
        assert outside is not None and "scriptPath" in outside.reason
        assert path_guard(tmp_path, "EnterWorktree", {"path": "../elsewhere"}) is not None
        assert path_guard(tmp_path, "Workflow", {"scriptPath": "inside.js"}) is None
        assert path_guard(tmp_path, "TodoWrite", {"todos": []}) is None
        assert path_guard(tmp_path, "mcp__fs__read", {"path": "/etc/passwd"}) is None  # MCP servers judge their own
