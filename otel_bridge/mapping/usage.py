"""call.summary.usage: token counts keyed by model, and one request per model call.

Weave's usage statistics add up summary.usage over every OTel span, and add prompt_tokens to input_tokens
(and completion_tokens to output_tokens). So a count is reported once: in one spelling, on the span that
made the model call, never also on the span that sums its children.
"""

from __future__ import annotations

from typing import Any

from otel_bridge.mapping.lookup import as_int, as_str, find
from otel_bridge.mapping.rules import KeyPath, Rules

__all__ = ["usage", "usage_key", "matches"]

_SPAN_KIND_CLIENT = 3
# (current spelling, older spelling of the same count): a span that sends both (Vercel AI SDK 4:
# gen_ai.usage.input_tokens and ai.usage.promptTokens) keeps the current one.
_SPELLINGS = (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens"))


def matches(tree: dict[str, Any], table: tuple[tuple[KeyPath, frozenset[str]], ...]) -> bool:
    """Whether an attribute of the table has one of the values listed for it."""
    for path, values in table:
        if path[0] in tree and as_str(find(tree, path)) in values:
            return True
    return False


def _counts(tree: dict[str, Any], rules: Rules) -> dict[str, int]:
    counts: dict[str, int] = {}
    for field, sources in rules.usage:
        for _, path in sources:
            if path[0] in tree:
                value = find(tree, path)
                if value is not None and (value := as_int(value)) is not None:  # 0 is a real count
                    counts[field] = value
                    break
    for current, older in _SPELLINGS:
        if current in counts:
            counts.pop(older, None)
    if "total_tokens" not in counts:
        # Only when the span sent none, and from one pair: cached and reasoning tokens are parts of
        # input and output, never added to them.
        if "input_tokens" in counts and "output_tokens" in counts:
            total = as_int(counts["input_tokens"] + counts["output_tokens"])
        elif "prompt_tokens" in counts and "completion_tokens" in counts:
            total = as_int(counts["prompt_tokens"] + counts["completion_tokens"])
        else:
            total = None
        if total is not None:  # None too when a hostile pair adds up past 64 bits, which JSON cannot carry
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


def usage(tree: dict[str, Any], span_kind: int, attributes: dict[str, Any], rules: Rules) -> dict[str, dict[str, int]]:
    if span_kind != _SPAN_KIND_CLIENT and matches(tree, rules.usage_rollups):
        counts: dict[str, int] = {}
    else:
        counts = _counts(tree, rules)
    if matches(tree, rules.model_calls):
        counts["requests"] = 1
    if not counts:
        return {}
    return {usage_key(attributes): counts}
