"""Who may register what: the stdio policy (`AGENT_API_MCP_STDIO`) and the SSRF rule for remote URLs."""

from __future__ import annotations

import os
from typing import Any

from agent_api.config import Settings
from agent_api.errors import Forbidden, ValidationFailed
from agent_api.models import User
from agent_api.runtime import ssrf


def executable_allowlisted(command: str, allowlist: list[str]) -> bool:
    """A bare name matches only the same bare name (found on PATH); an absolute path only that exact path.

    So an allowlisted `npx` never admits `/tmp/evil/npx`.
    """
    if os.path.isabs(command):
        wanted = os.path.normpath(command)
        return any(os.path.isabs(e) and os.path.normpath(e) == wanted for e in allowlist)
    if "/" in command or "\\" in command:
        return False
    return command in allowlist


def runnable_reason(settings: Settings, command: str) -> str | None:
    """Why the stdio command may not run on this host now, or None when it may."""
    if settings.mcp_stdio == "off":
        return "stdio MCP servers are disabled on this server (AGENT_API_MCP_STDIO=off)"
    if settings.mcp_stdio == "allowlist" and not executable_allowlisted(command, settings.mcp_stdio_allowlist):
        return f"the executable {command!r} is not on the allowlist (AGENT_API_MCP_STDIO_ALLOWLIST)"
    return None


def ensure_may_register_stdio(settings: Settings, user: User, config: dict[str, Any]) -> None:
    reason = runnable_reason(settings, config["command"])
    if reason is not None:
        code = "mcp_stdio_disabled" if settings.mcp_stdio == "off" else "mcp_stdio_not_allowlisted"
        raise Forbidden(reason, code=code)
    if settings.mcp_stdio == "admin" and not user.is_admin:
        raise Forbidden(
            "Only administrators may register stdio MCP servers (they run commands on the host)",
            code="mcp_stdio_admin_only",
        )
    steering = sorted(name for name in config.get("env") or {} if _steers_execution(name))
    if steering and not user.is_admin:
        # PATH would pick another `npx` than the allowlisted one; LD_PRELOAD and friends load any code into it.
        raise Forbidden(
            f"Only administrators may set these variables for a stdio server: {', '.join(steering)}",
            code="mcp_env_not_allowed",
            details={"variables": steering},
        )


_STEERING_EXACT = frozenset(
    {"PATH", "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "NODE_OPTIONS", "NODE_PATH", "GIT_EXEC_PATH"}
)
_STEERING_PREFIXES = ("LD_", "DYLD_", "PYTHON", "PERL5", "PERLLIB", "RUBY", "GCONV_", "NPM_CONFIG_")


def _steers_execution(name: str) -> bool:
    """Variables that change which program runs, or what code it loads."""
    upper = name.upper()
    return upper in _STEERING_EXACT or upper.startswith(_STEERING_PREFIXES)


async def ensure_safe_url(settings: Settings, url: str) -> None:
    """Refuse unsafe URLs; a name that does not resolve now is accepted, and checked again before every use."""
    try:
        await ssrf.check_url(url, settings.mcp_allowed_hosts)
    except ssrf.UnresolvableHost:
        return
    except ssrf.UnsafeUrl as exc:
        raise ValidationFailed(f"Refused MCP server URL: {exc}", code="mcp_url_not_allowed") from exc


def ensure_may_publish(user: User, is_global: bool) -> None:
    if is_global and not user.is_admin:
        raise Forbidden("Only administrators may make an MCP server global", code="admin_required")
