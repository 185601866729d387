"""A curated catalogue of popular MCP servers, and filling one in to make a server config."""

from __future__ import annotations

import re
from typing import Any

from agent_api.mcp_servers.schemas import FromTemplate, TemplateEnv, TemplateRead

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_REF = "https://github.com/modelcontextprotocol/servers/tree/main/src"


def _npx(package: str, *extra: str) -> dict[str, Any]:
    return {"server_type": "stdio", "command": "npx", "args": ["-y", package, *extra]}


def _uvx(package: str, *extra: str) -> dict[str, Any]:
    return {"server_type": "stdio", "command": "uvx", "args": [package, *extra]}


def _env(name: str, description: str, required: bool = True) -> TemplateEnv:
    return TemplateEnv(name=name, description=description, required=required)


TEMPLATES: dict[str, TemplateRead] = {
    t.id: t
    for t in [
        TemplateRead(
            id="filesystem",
            name="Filesystem",
            description="Read, write and search files inside the directories you allow.",
            **_npx("@modelcontextprotocol/server-filesystem", "{allowed_directory}"),
            placeholders={"allowed_directory": "Absolute path of the one directory the server may touch"},
            docs=f"{_REF}/filesystem",
        ),
        TemplateRead(
            id="git",
            name="Git",
            description="Read, search and change a local Git repository.",
            **_uvx("mcp-server-git", "--repository", "{repository_path}"),
            placeholders={"repository_path": "Absolute path of the Git repository"},
            docs="https://github.com/modelcontextprotocol/servers-archived/tree/main/src/git",
        ),
        TemplateRead(
            id="fetch",
            name="Fetch",
            description="Fetch web pages and convert them to Markdown for the model.",
            **_uvx("mcp-server-fetch"),
            docs=f"{_REF}/fetch",
        ),
        TemplateRead(
            id="memory",
            name="Memory",
            description="A persistent knowledge graph the agent can store facts in.",
            **_npx("@modelcontextprotocol/server-memory"),
            env=[_env("MEMORY_FILE_PATH", "Where the graph is stored (JSON file)", required=False)],
            docs=f"{_REF}/memory",
        ),
        TemplateRead(
            id="sqlite",
            name="SQLite",
            description="Query and change a SQLite database.",
            **_uvx("mcp-server-sqlite", "--db-path", "{database_path}"),
            placeholders={"database_path": "Path of the SQLite database file"},
            docs="https://github.com/modelcontextprotocol/servers-archived/tree/main/src/sqlite",
        ),
        TemplateRead(
            id="postgres",
            name="PostgreSQL",
            description="Read-only SQL access to a PostgreSQL database.",
            **_npx("@modelcontextprotocol/server-postgres", "{connection_url}"),
            placeholders={"connection_url": "postgresql://user@host/db (an argument, so not stored encrypted)"},
            docs="https://github.com/modelcontextprotocol/servers-archived/tree/main/src/postgres",
        ),
        TemplateRead(
            id="github",
            name="GitHub",
            description="Repositories, issues and pull requests through the GitHub API.",
            **_npx("@modelcontextprotocol/server-github"),
            env=[_env("GITHUB_PERSONAL_ACCESS_TOKEN", "A GitHub personal access token")],
            docs="https://github.com/github/github-mcp-server",
        ),
        TemplateRead(
            id="slack",
            name="Slack",
            description="Read channels and post messages in a Slack workspace.",
            **_npx("@modelcontextprotocol/server-slack"),
            env=[
                _env("SLACK_BOT_TOKEN", "Bot user OAuth token (xoxb-...)"),
                _env("SLACK_TEAM_ID", "The workspace id (T...)"),
            ],
            docs="https://github.com/modelcontextprotocol/servers-archived/tree/main/src/slack",
        ),
        TemplateRead(
            id="brave-search",
            name="Brave Search",
            description="Web and local search through the Brave Search API.",
            **_npx("@modelcontextprotocol/server-brave-search"),
            env=[_env("BRAVE_API_KEY", "A Brave Search API key")],
            docs="https://github.com/brave/brave-search-mcp-server",
        ),
        TemplateRead(
            id="playwright",
            name="Playwright",
            description="Drive a real browser: navigate, click, fill forms, take snapshots.",
            **_npx("@playwright/mcp@latest"),
            docs="https://github.com/microsoft/playwright-mcp",
        ),
        TemplateRead(
            id="puppeteer",
            name="Puppeteer",
            description="Browser automation with Puppeteer (screenshots, navigation, scripts).",
            **_npx("@modelcontextprotocol/server-puppeteer"),
            docs="https://github.com/modelcontextprotocol/servers-archived/tree/main/src/puppeteer",
        ),
        TemplateRead(
            id="sequential-thinking",
            name="Sequential Thinking",
            description="Structured step-by-step problem solving the model can revise.",
            **_npx("@modelcontextprotocol/server-sequential-thinking"),
            docs=f"{_REF}/sequentialthinking",
        ),
        TemplateRead(
            id="time",
            name="Time",
            description="Current time and time-zone conversion.",
            **_uvx("mcp-server-time"),
            docs=f"{_REF}/time",
        ),
        TemplateRead(
            id="everything",
            name="Everything",
            description="The MCP reference server exercising every protocol feature; good for testing clients.",
            **_npx("@modelcontextprotocol/server-everything"),
            docs=f"{_REF}/everything",
        ),
    ]
}


class TemplateError(ValueError):
    pass


def fill(body: FromTemplate) -> dict[str, Any]:
    """A create body (`name`, `server_type`, `config`, ...) from a template and the caller's values."""
    template = TEMPLATES.get(body.template)
    if template is None:
        raise TemplateError(f"unknown template {body.template!r}")
    missing = sorted(set(template.placeholders) - set(body.values))
    if missing:
        raise TemplateError(f"missing values for placeholders: {', '.join(missing)}")
    unknown = sorted(set(body.values) - set(template.placeholders))
    if unknown:
        raise TemplateError(f"the template has no placeholders named: {', '.join(unknown)}")
    required = [e.name for e in template.env if e.required and not body.env.get(e.name)]
    if required:
        raise TemplateError(f"missing required env: {', '.join(required)}")
    known_env = {e.name for e in template.env}
    extra_env = sorted(set(body.env) - known_env)
    if extra_env:
        raise TemplateError(f"the template takes no env named: {', '.join(extra_env)}")
    config: dict[str, Any]
    if template.server_type == "stdio":
        args = [_PLACEHOLDER.sub(lambda m: body.values[m.group(1)], a) for a in template.args]
        config = {"command": template.command, "args": args, "env": dict(body.env)}
    else:
        config = {"url": _PLACEHOLDER.sub(lambda m: body.values[m.group(1)], template.url or ""), "headers": {}}
    return {
        "name": body.name or template.id,
        "description": body.description or template.description,
        "server_type": template.server_type,
        "config": config,
        "is_enabled": body.is_enabled,
        "is_global": body.is_global,
    }
