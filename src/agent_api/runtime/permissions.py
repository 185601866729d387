"""Permission rules, evaluated before a tool runs: path guard, allow/deny rules, then the session's mode.

Rules look like the CLI's: `Bash`, `Bash(git:*)`, `Read(src/*)`, `mcp__server__tool`. The part in brackets is a
glob over the tool's main argument (the command for Bash, the path for file tools); `:*` means "followed by anything".

Bash rules know about shell syntax, as the CLI's do: an allow rule's pattern never covers a command that chains,
substitutes or redirects (`git status; rm -rf x`, `git status && curl ...`, `git status $(...)`, `git status > f`):
such a command is allowed by a pattern only when it is exactly the pattern's text. A prefix `Bash(git status:*)` covers
`git status` and `git status <more words>`, not `git statusx`. A deny rule covers a command when it matches the
whole command or any of the parts the shell would run separately.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent_api.runtime import ssrf
from agent_api.runtime.workdir import resolve_inside

# Which input field names the path a file tool touches.
FILE_TOOL_PATH_FIELDS = {
    "Read": "file_path",
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
    "Glob": "path",
    "Grep": "path",
    "LS": "path",
    "NotebookRead": "notebook_path",
}
_WILDCARDS = re.compile(r"[*?\[{]")
_PATH_FIELD = re.compile(r"(?:^|_)(?:path|dir|directory|cwd)$|(?:Path|Dir|Directory)$")
READ_ONLY_TOOLS = frozenset({"Read", "Glob", "Grep", "LS", "TodoWrite", "TodoRead", "NotebookRead", "BashOutput"})
EDIT_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})

Decision = Literal["allow", "deny"]
DecidedBy = Literal["mode", "rule", "user", "timeout", "cancelled", "path_guard", "sandbox"]
# The CLI's own way for a Bash call to ask to run outside the sandbox.
UNSANDBOXED_FLAG = "dangerouslyDisableSandbox"
# What the CLI's sandbox network proxy asks `can_use_tool` before a sandboxed command reaches a new host.
SANDBOX_NETWORK_TOOL = "SandboxNetworkAccess"
_MAX_URLS_CHECKED = 20


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    decided_by: DecidedBy
    reason: str


def main_argument(tool_name: str, tool_input: dict[str, Any]) -> str | None:
    if tool_name == "Bash":
        return str(tool_input.get("command", ""))
    field = FILE_TOOL_PATH_FIELDS.get(tool_name)
    if field and tool_input.get(field) is not None:
        return str(tool_input[field])
    return None


_RULE = re.compile(r"^(?P<tool>[^()]+?)(?:\((?P<pattern>.*)\))?$")


# Shell syntax that chains, substitutes, redirects, groups, escapes or continues a command.
_SHELL_SYNTAX = re.compile(r"[;&|<>$`()\\\n\r]")
# Where the shell starts another command: what a deny rule looks at besides the whole command.
_COMMAND_BREAK = re.compile(r"\$\(|[;&|()`\n\r]")
# What a remembered rule may be built from: a command name (no glob, quote, `=` or `:`) and a plain subcommand word.
_COMMAND_NAME = re.compile(r"^[A-Za-z0-9_./+][A-Za-z0-9_./+-]*$")
_SUBCOMMAND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PLAIN_TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
MAX_REMEMBERED_COMMAND = 1000
# Commands whose arguments are another command or a program: remembered only as the exact command.
_RUNS_OTHER_COMMANDS = frozenset(
    [
        "sh",
        "bash",
        "zsh",
        "dash",
        "ksh",
        "fish",
        "env",
        "sudo",
        "doas",
        "su",
        "xargs",
        "nohup",
        "time",
        "timeout",
        "exec",
        "command",
        "builtin",
        "eval",
        "source",
        ".",
        "nice",
        "ionice",
        "strace",
        "ltrace",
        "watch",
        "chroot",
        "setsid",
        "stdbuf",
        "unbuffer",
        "parallel",
        "find",
        "awk",
        "gawk",
        "sed",
        "make",
        "npx",
        "pnpm",
        "yarn",
        "npm",
        "uv",
        "uvx",
        "pipx",
        "docker",
        "podman",
        "kubectl",
        "ssh",
        "scp",
        "rsync",
        "git-shell",
    ]
)
_INTERPRETER = re.compile(
    r"^(python[0-9.]*|pypy[0-9.]*|node|nodejs|deno|bun|perl|ruby|php|lua[0-9.]*|tclsh|R|Rscript|java|osascript)$"
)


def is_compound(command: str) -> bool:
    """Whether a Bash command holds shell syntax that could make it more than one plain command."""
    return bool(_SHELL_SYNTAX.search(command))


def _bash_pattern_matches(pattern: str, command: str, *, deny: bool) -> bool:
    if pattern.endswith(":*"):
        prefix = pattern[:-2]
        if deny:  # wider is safer for a deny rule: `Bash(rm:*)` also covers `rmdir`
            return fnmatch.fnmatchcase(command, prefix + "*")
        return fnmatch.fnmatchcase(command, prefix) or fnmatch.fnmatchcase(command, prefix + " *")
    return fnmatch.fnmatchcase(command, pattern)


def _bash_rule_matches(pattern: str, command: str, *, deny: bool) -> bool:
    if deny:
        parts = [command, *(p.strip() for p in _COMMAND_BREAK.split(command))]
        return any(_bash_pattern_matches(pattern, part, deny=True) for part in parts if part)
    if is_compound(command):
        return command == pattern  # only the exact text someone allowed, never a wildcard across shell syntax
    return _bash_pattern_matches(pattern, command, deny=False)


def rule_matches(rule: str, tool_name: str, tool_input: dict[str, Any], *, deny: bool = False) -> bool:
    """Whether an allow rule (or with `deny`, a deny rule) covers the call."""
    parsed = _RULE.match(rule.strip())
    if not parsed or parsed["tool"].strip() != tool_name:
        return False
    pattern = parsed["pattern"]
    if pattern is None:
        return True
    argument = main_argument(tool_name, tool_input)
    if argument is None:
        return False
    if tool_name == "Bash":
        return _bash_rule_matches(pattern, argument, deny=deny)
    glob = pattern[:-2] + "*" if pattern.endswith(":*") else pattern
    return fnmatch.fnmatchcase(argument, glob)


def remembered_rule(tool_name: str, tool_input: dict[str, Any]) -> str | None:
    """The rule a decision remembered for the session stands for, or None when none can be derived safely.

    Bash: the command's first two words when the second is a plain subcommand word (`git status --short` ->
    `Bash(git status:*)`), or the first alone (`ls` -> `Bash(ls:*)`); the exact command when a prefix would cover
    too much: an option or a file as the second word (`ls -la`, `cat README.md`), or a command that runs other
    commands or programs (`bash`, `env`, `sudo`, `python3`, `./script`). A command with shell syntax (`;`, `&&`, `|`,
    `$(...)`, redirections, newlines...), glob characters, an unusual first word or a very long text gets no rule. Other tools: the tool's name
    (`Write`, `mcp__server__tool`). The sandbox's network questions get none (one rule would open every host).
    """
    if tool_name == "Bash":
        command = tool_input.get("command")
        if not isinstance(command, str) or len(command) > MAX_REMEMBERED_COMMAND or is_compound(command):
            return None
        words = command.split()
        if not words or not _COMMAND_NAME.match(words[0]) or any(c in command for c in "*?[]"):
            return None  # a glob in the rule would match more than this command
        if words[0] in _RUNS_OTHER_COMMANDS or "/" in words[0] or _INTERPRETER.match(words[0]):
            # `bash`, `env`, `sudo`, `python3`, `./script`: any prefix of theirs runs anything; only this command.
            return f"Bash({' '.join(words)})"
        if len(words) > 1 and not _SUBCOMMAND.match(words[1]):
            # `git --version`, `cat README.md`: a prefix rule would cover every option and every file.
            return f"Bash({' '.join(words)})"
        return f"Bash({' '.join(words[:2])}:*)"
    if tool_name == SANDBOX_NETWORK_TOOL or not _PLAIN_TOOL_NAME.match(tool_name):
        return None
    return tool_name


def _glob_root(pattern: str) -> str:
    """The fixed directory part of a glob pattern: what it can reach at most."""
    match = _WILDCARDS.search(pattern)
    fixed = pattern[: match.start()] if match else pattern
    return fixed.rsplit("/", 1)[0] if "/" in fixed else "."


def crosses_symlink(cwd: Path, raw: str) -> bool:
    """Whether a path, walked from the session directory down, passes through a symbolic link.

    The CLI opens the path after our check, in its own process outside the sandbox; the agent's Bash could swap a
    directory on the way for a link to the data dir in between. Paths through links are refused, so a swap has to
    beat the check's own walk as well as the CLI's.
    """
    root = os.path.realpath(cwd)
    rel = raw
    if os.path.isabs(raw):
        prefixes = [p.rstrip("/") for p in {os.path.abspath(cwd), root}]
        inside = [raw[len(p) :] for p in prefixes if raw == p or raw.startswith(p + "/")]
        if not inside:
            return True  # not under the session directory as written: treat as leaving it
        rel = inside[0].lstrip("/")
    current = root
    for part in Path(rel).parts:
        if part in ("", "."):
            continue
        current = os.path.dirname(current) if part == ".." else os.path.join(current, part)
        if os.path.islink(current):
            return True
        if not os.path.lexists(current):
            return False  # a path still to be created: nothing further to follow
    return False


def _path_fields(tool_name: str, tool_input: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every input field that names a path: the known file tools' own, and for any other built-in tool (the CLI
    adds tools between versions) fields named like a path or a directory."""
    known = FILE_TOOL_PATH_FIELDS.get(tool_name)
    if known is not None:
        return [(known, tool_input.get(known))]
    if tool_name.startswith("mcp__"):
        return []
    return [(k, v) for k, v in tool_input.items() if _PATH_FIELD.search(k)]


def path_guard(cwd: Path, tool_name: str, tool_input: dict[str, Any]) -> Verdict | None:
    """Deny a tool whose path (or, for Glob, pattern) resolves outside the session's directory or through a link."""
    base = cwd
    for field, raw in _path_fields(tool_name, tool_input):
        if raw is None or raw == "":
            continue
        resolved = resolve_inside(cwd, raw) if isinstance(raw, str) else None
        if resolved is None:
            return Verdict(
                "deny", "path_guard", f"{tool_name} {field} {str(raw)[:200]!r} is outside the session directory"
            )
        if crosses_symlink(cwd, raw):
            return Verdict(
                "deny", "path_guard", f"{tool_name} {field} {str(raw)[:200]!r} passes through a symbolic link"
            )
        base = resolved
    pattern = tool_input.get("pattern") if tool_name == "Glob" else None
    # A Glob pattern is a path too: "/etc/**" or "../../**" reaches past `path`.
    if pattern is not None and (
        not isinstance(pattern, str) or resolve_inside(cwd, str(base / _glob_root(pattern))) is None
    ):
        return Verdict(
            "deny", "path_guard", f"Glob pattern {str(pattern)[:200]!r} reaches outside the session directory"
        )
    return None


def blocked_command(patterns: list[str], tool_name: str, tool_input: dict[str, Any]) -> str | None:
    """The first `blocked_commands` pattern a Bash command matches, if any."""
    if tool_name != "Bash" or not patterns:
        return None
    command = str(tool_input.get("command", ""))
    return next((p for p in patterns if re.search(p, command)), None)


def leaves_sandbox(tool_name: str, tool_input: dict[str, Any], bash_sandboxed: bool) -> Verdict | None:
    """Refuse a Bash call that asks to run outside the sandbox; the CLI is also told never to honour the flag."""
    if not bash_sandboxed or tool_name != "Bash" or not tool_input.get(UNSANDBOXED_FLAG):
        return None
    return Verdict(
        "deny",
        "sandbox",
        f"commands on this server always run inside the sandbox: {UNSANDBOXED_FLAG} is refused; "
        "run the command again without it",
    )


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+|(?<![:\w/])//[^\s\"'<>/]+[^\s\"'<>]*")
# URL parsers that follow the WHATWG standard read "http:/host", "http:\\host" and "http:host" as http://host.
_LAX_SPECIAL_URL = re.compile(r"\b(https?|wss?|ftp|file):/*(?=[^\s/])", re.IGNORECASE)
_HOST_KEYS = frozenset({"host", "hostname", "ip", "address", "server"})


class TooManyTargets(Exception):
    pass


def _collect_urls(value: Any, found: list[str], depth: int = 0) -> None:
    """Every URL-like target in a tool input: URLs inside text and in keys, `//host` references and host fields.
    Past the limits of what is checked, the whole input is refused rather than partly checked."""
    if depth > 8 or len(found) > _MAX_URLS_CHECKED:
        raise TooManyTargets
    if isinstance(value, str):
        text = _LAX_SPECIAL_URL.sub(lambda m: m.group(1) + "://", value.replace("\\", "/"))
        found.extend(m if "://" in m else "http:" + m for m in _URL_IN_TEXT.findall(text))
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect_urls(key, found, depth + 1)
            if isinstance(key, str) and key.lower() in _HOST_KEYS and isinstance(item, str) and item.strip():
                host = item.strip()
                found.append(f"http://[{host}]/" if ":" in host and not host.startswith("[") else f"http://{host}/")
            _collect_urls(item, found, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _collect_urls(item, found, depth + 1)
    if len(found) > _MAX_URLS_CHECKED:
        raise TooManyTargets


def network_targets(tool_name: str, tool_input: dict[str, Any]) -> list[str]:
    """The URLs a tool would reach from the CLI process itself, outside the Bash sandbox. Raises
    `TooManyTargets` when an input holds more than can be checked."""
    if tool_name == "WebFetch":
        return [str(tool_input.get("url") or "")]
    if tool_name == SANDBOX_NETWORK_TOOL:
        host = str(tool_input.get("host") or "")
        return [f"http://[{host}]/" if ":" in host and not host.startswith("[") else f"http://{host}/"]
    if tool_name.startswith("mcp__"):
        found: list[str] = []
        _collect_urls(tool_input, found)
        return found
    return []


async def network_guard(tool_name: str, tool_input: dict[str, Any]) -> Verdict | None:
    """Deny a tool that would reach a loopback, private, link-local or metadata address (the model-key relay,
    the database, other services on this host, cloud credentials), or a target that cannot be checked."""
    try:
        targets = network_targets(tool_name, tool_input)
    except TooManyTargets:
        return Verdict("deny", "sandbox", f"{tool_name} input holds more network targets than are checked")
    for url in targets:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("http", "https", "ws", "wss"):
            return Verdict("deny", "sandbox", f"{tool_name} may not reach {url[:200]!r}: only http(s) and ws(s)")
        checked = url if scheme in ("http", "https") else "http" + url[len(scheme) :]
        try:
            await ssrf.check_url(checked, ())
        except ssrf.UnsafeUrl as exc:
            return Verdict("deny", "sandbox", f"{tool_name} may not reach {url[:200]!r}: {exc}")
    return None


def decide(
    *,
    cwd: Path,
    mode: str,
    allowed: list[str],
    disallowed: list[str],
    tool_name: str,
    tool_input: dict[str, Any],
    bash_sandboxed: bool,
) -> Verdict | None:
    """A verdict when rules or the mode settle it; None when a person has to decide."""
    guarded = path_guard(cwd, tool_name, tool_input)
    if guarded:
        return guarded
    for rule in disallowed:
        if rule_matches(rule, tool_name, tool_input, deny=True):
            return Verdict("deny", "rule", f"denied by rule {rule!r}")
    for rule in allowed:
        if rule_matches(rule, tool_name, tool_input):
            return Verdict("allow", "rule", f"allowed by rule {rule!r}")
    if mode == "bypassPermissions":
        return Verdict("allow", "mode", "bypassPermissions")
    if tool_name in READ_ONLY_TOOLS:
        return Verdict("allow", "mode", f"{tool_name} is read-only")
    if mode == "plan":
        return Verdict("deny", "mode", "plan mode makes no changes")
    if mode == "acceptEdits" and tool_name in EDIT_TOOLS:
        return Verdict("allow", "mode", "acceptEdits")
    if tool_name == "Bash" and bash_sandboxed:
        return Verdict("allow", "mode", "Bash runs in the sandbox")
    return None


def input_summary(tool_input: dict[str, Any], limit: int = 2000) -> dict[str, Any]:
    """The tool input as recorded: long strings cut, so a 1 MB Write does not bloat the decision log."""
    summary: dict[str, Any] = {}
    for key, value in tool_input.items():
        if isinstance(value, str) and len(value) > limit:
            summary[key] = value[:limit] + f"... [{len(value) - limit} more characters]"
        else:
            summary[key] = value
    return summary
