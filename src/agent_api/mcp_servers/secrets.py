"""Encryption at rest of MCP secrets (env values, header values) with a Fernet key derived from the service secret."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from agent_api.errors import Conflict
from agent_api.security import fernet_for

REDACTED = "***"
SECRET_FIELDS = ("env", "headers")


def _fernet(service_secret: str) -> Fernet:
    return fernet_for(service_secret, "mcp-server secrets")


def encrypt(service_secret: str, secrets: dict[str, dict[str, str]]) -> str | None:
    if not any(secrets.values()):
        return None
    return _fernet(service_secret).encrypt(json.dumps(secrets).encode()).decode()


def decrypt(service_secret: str, token: str | None) -> dict[str, dict[str, str]]:
    if not token:
        return {}
    try:
        data = json.loads(_fernet(service_secret).decrypt(token.encode()))
    except InvalidToken as exc:
        # The service secret changed since the value was stored; the message names no value.
        raise Conflict(
            "The server's stored secrets cannot be decrypted with the current secret key; send them again",
            code="mcp_secrets_unreadable",
        ) from exc
    return {k: dict(v) for k, v in data.items() if k in SECRET_FIELDS}


def split(config: dict[str, Any], previous: dict[str, dict[str, str]] | None = None) -> tuple[dict[str, Any], dict]:
    """The config with every secret value replaced by "***", and the secrets themselves.

    A value sent as "***" keeps the previous secret of that name, so clients can send back what they read.
    """
    previous = previous or {}
    public = dict(config)
    secrets: dict[str, dict[str, str]] = {}
    for field in SECRET_FIELDS:
        values = config.get(field)
        if values is None:
            continue
        kept: dict[str, str] = {}
        for name, value in values.items():
            if value == REDACTED:
                if name not in previous.get(field, {}):
                    raise KeyError(f"{field}.{name}")
                kept[name] = previous[field][name]
            else:
                kept[name] = value
        secrets[field] = kept
        public[field] = dict.fromkeys(kept, REDACTED)
    return public, secrets


def reveal(public: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The config with real secret values, for the agent CLI and health checks only."""
    full = dict(public)
    for field in SECRET_FIELDS:
        if field in full:
            full[field] = dict(secrets.get(field, {}))
    return full
