"""What a turn cost, from what the agent CLI reports.

The CLI reports `total_cost_usd` as a running total for its process, and a process that resumes a conversation may
start from the total its predecessor saved when it exited cleanly (not after a crash). So a turn's cost is the
difference from the total this process had already been billed for; the first turn a process reports is priced by
its share of the process's tokens, since what the process started from is unknown.

Anthropic prices every model in the same proportions (output 5x input, cache reads 0.1x, cache writes 1.25x), so
usage reduces to one number of input-equivalent tokens and a model's price to one rate per such token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OUTPUT_WEIGHT = 5.0
CACHE_READ_WEIGHT = 0.1
CACHE_WRITE_WEIGHT = 1.25

# USD per million input tokens, by the first name fragment a model id contains; the CLI's own price for a model it
# does not know (the offline model) is the first row's.
LIST_PRICES: tuple[tuple[str, float], ...] = (
    ("opus-4-5", 5.0),
    ("opus-4-6", 5.0),
    ("opus", 15.0),
    ("sonnet", 3.0),
    ("haiku-4", 1.0),
    ("haiku-3-5", 0.8),
    ("haiku", 0.25),
)
UNKNOWN_MODEL_PRICE = 5.0


def _int(usage: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int | float):
            return int(value)
    return 0


def weighted_tokens(usage: Mapping[str, Any] | None) -> float:
    """Input-equivalent tokens of a usage record (the API's snake_case or the CLI's camelCase model usage)."""
    if not usage:
        return 0.0
    return (
        _int(usage, "input_tokens", "inputTokens")
        + OUTPUT_WEIGHT * _int(usage, "output_tokens", "outputTokens")
        + CACHE_READ_WEIGHT * _int(usage, "cache_read_input_tokens", "cacheReadInputTokens")
        + CACHE_WRITE_WEIGHT * _int(usage, "cache_creation_input_tokens", "cacheCreationInputTokens")
    )


def turn_cost(
    total_cost_usd: float,
    usage: Mapping[str, Any] | None,
    model_usage: Mapping[str, Any] | None,
    billed_before: float | None,
) -> float:
    """This turn's cost from the process's running total.

    `billed_before`: what this process's earlier turns were billed in all (None before its first result).
    """
    if billed_before is not None:
        return max(0.0, total_cost_usd - billed_before)
    process_tokens = sum(weighted_tokens(m) for m in (model_usage or {}).values() if isinstance(m, Mapping))
    turn_tokens = weighted_tokens(usage)
    if process_tokens <= turn_tokens or turn_tokens <= 0:
        return max(0.0, total_cost_usd)
    return max(0.0, total_cost_usd * turn_tokens / process_tokens)


def list_rate(model: str | None) -> float:
    """USD per input-equivalent token at list price."""
    name = (model or "").lower()
    per_million = next((price for fragment, price in LIST_PRICES if fragment in name), UNKNOWN_MODEL_PRICE)
    return per_million / 1_000_000


def add_usage(total: dict[str, int], usage: Mapping[str, Any]) -> dict[str, int]:
    """`total` plus one model call's usage (the fields that are priced)."""
    names = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    return {name: total.get(name, 0) + _int(usage, name) for name in names}
