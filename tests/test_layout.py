"""The code's layering: no import circle between top-level packages and modules, a runtime that knows no domain."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import agent_api

ROOT = Path(agent_api.__file__).parent
DOMAINS = {
    "admin",
    "auth",
    "mcp_servers",
    "monitoring",
    "reports",
    "session_templates",
    "sessions",
    "streaming",
    "tasks",
    "turns",
}


def _unit(path: Path) -> str:
    """The top-level package or module a file belongs to."""
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    """Every `agent_api` unit a file imports, typing-only imports included: they are dependencies too."""
    units: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "agent_api":
            units.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agent_api."):
            units.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            units.update(a.name.split(".")[1] for a in node.names if a.name.startswith("agent_api."))
    return units


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        unit = _unit(path)
        graph.setdefault(unit, set()).update(u for u in _imported_units(path) if u != unit)
    return graph


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_every_module_imports() -> None:
    for info in pkgutil.walk_packages([str(ROOT)], prefix="agent_api."):
        if ".migrations.versions." in info.name:
            continue  # alembic loads these itself, with its own `op` context
        importlib.import_module(info.name)


def test_no_import_circle_between_top_level_units() -> None:
    graph = import_graph()
    assert {"sessions", "state", "runtime"} <= graph.keys()  # the graph really was built
    cycles = [c for unit in sorted(graph) if (c := _cycle_from(graph, unit))]
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_runtime_imports_no_domain_and_no_fastapi() -> None:
    """(The model-key relay is a small Starlette app of its own; the API's framework stays out.)"""
    for path in (ROOT / "runtime").rglob("*.py"):
        units = _imported_units(path)
        assert not units & DOMAINS, f"{path.name} imports {units & DOMAINS}"
        assert units <= {"runtime"}, f"{path.name} imports {units - {'runtime'}}"
        source = path.read_text()
        assert "import fastapi" not in source and "from fastapi" not in source, path.name


def test_the_checker_finds_a_circle() -> None:
    assert _cycle_from({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]
    assert _cycle_from({"a": {"b"}, "b": {"c"}}, "a") is None
