"""Which model the agents talk to: a configured Anthropic(-compatible) endpoint, or the offline model."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from agent_api.runtime.key_proxy import DEFAULT_UPSTREAM, CredentialProxy
from agent_api.runtime.offline_model import OFFLINE_MODEL_NAME, OfflineModel, cli_env

log = logging.getLogger("agent_api.runtime")

PASSTHROUGH = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL")


# Host variables an agent process may see as they are; everything else in the server's environment is blanked.
HOST_ENV_KEPT = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "TMPDIR",
        "PWD",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)


def scrubbed_host_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Blank values for the server's own variables (its secret key, database URL, admin password, cloud
    credentials...): the SDK starts the CLI with the server's whole environment under `options.env`, and the
    agent's Bash would print them. The SDK cannot drop a variable, so each is overridden with an empty value."""
    return {k: "" for k in environ if k not in HOST_ENV_KEPT and not k.startswith("LC_") and k not in PASSTHROUGH}


def base_env(max_retries: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What every agent process gets, whatever the model: no telemetry, no updater, bounded retries, and none of
    the server's own secrets."""
    return {
        **scrubbed_host_env(os.environ if environ is None else environ),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
        # bypassPermissions refuses to run as root unless told it is sandboxed; our path guard and hooks stay on.
        "IS_SANDBOX": "1",
    }


@dataclass
class ModelEndpoint:
    kind: Literal["anthropic", "offline"]
    env: dict[str, str]
    model: str | None
    base_url: str | None
    offline: OfflineModel | None = None
    relay: CredentialProxy | None = None

    async def stop(self) -> None:
        if self.offline is not None:
            await self.offline.stop()
        if self.relay is not None:
            await self.relay.stop()


async def start_endpoint(max_retries: int, environ: Mapping[str, str] | None = None) -> ModelEndpoint:
    environ = os.environ if environ is None else environ
    env = base_env(max_retries, environ)
    api_key, auth_token = environ.get("ANTHROPIC_API_KEY"), environ.get("ANTHROPIC_AUTH_TOKEN")
    if api_key or auth_token:
        upstream = environ.get("ANTHROPIC_BASE_URL")
        relay = CredentialProxy(upstream, api_key=api_key, auth_token=None if api_key else auth_token)
        await relay.start()
        env.update(
            {
                "ANTHROPIC_BASE_URL": relay.base_url,
                "ANTHROPIC_API_KEY": "" if relay.uses_auth_token else relay.token,
                "ANTHROPIC_AUTH_TOKEN": relay.token if relay.uses_auth_token else "",
            }
        )
        if environ.get("ANTHROPIC_MODEL"):
            env["ANTHROPIC_MODEL"] = environ["ANTHROPIC_MODEL"]
        return ModelEndpoint(
            "anthropic", env, environ.get("ANTHROPIC_MODEL"), upstream or DEFAULT_UPSTREAM, relay=relay
        )
    offline = OfflineModel()
    await offline.start()
    env.update(cli_env(offline.base_url))
    env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    log.warning(
        "OFFLINE MODEL: no ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN is set, so agents talk to the built-in "
        "offline model at %s. It follows directives (run:, write PATH:, read PATH) and echoes everything else.",
        offline.base_url,
    )
    return ModelEndpoint("offline", env, OFFLINE_MODEL_NAME, offline.base_url, offline)


def sandbox_available() -> bool:
    """The CLI's Bash sandbox needs bubblewrap and socat on Linux."""
    return shutil.which("bwrap") is not None and shutil.which("socat") is not None
