"""call.summary.usage: token counts keyed by model."""

from __future__ import annotations

from typing import Any

from otel_bridge.mapping.lookup import as_int, find
from otel_bridge.mapping.rules import Rules

__all__ = ["usage"]


def _counts(tree: dict[str, Any], rules: Rules) -> dict[str, int]:
    counts: dict[str, int] = {}
    for field, sources in rules.usage.items():
        for _, path in sources:
            value = as_int(find(tree, path))
            if value is not None:  # 0 is a real count
                counts[field] = value
                break
    if "total_tokens" not in counts:
        # A total only when the span sent none, from one consistent pair (never both pairs added).
        if "prompt_tokens" in counts and "completion_tokens" in counts:
            total = as_int(counts["prompt_tokens"] + counts["completion_tokens"])
        elif "input_tokens" in counts and "output_tokens" in counts:
            total = as_int(counts["input_tokens"] + counts["output_tokens"])
        else:
            total = None
        if total is not None:  # None too when a hostile pair adds up past 64 bits
            counts["total_tokens"] = total
    return counts


def usage_key(attributes: dict[str, Any]) -> str:
    """Usage is keyed by model: attributes.model, else model_parameters.model, else "usage"."""
    model = attributes.get("model")
    if not model:
        parameters = attributes.get("model_parameters")
        if type(parameters) is dict:
            model = parameters.get("model")
    if not model:
        return "usage"
    return model if type(model) is str else str(model)


def usage(tree: dict[str, Any], attributes: dict[str, Any], rules: Rules) -> dict[str, dict[str, int]]:
    counts = _counts(tree, rules)
    if not counts:
        return {}
    return {usage_key(attributes): counts}
