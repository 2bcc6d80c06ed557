"""call.summary.usage: token counts keyed by model, and one request per model response.

Weave's usage statistics add up summary.usage over every OTel span, and add prompt_tokens to input_tokens
(and completion_tokens to output_tokens). So a count is reported once: in one spelling, on the span that
made the model call, never also on the span that sums its children.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from otel_bridge.mapping.lookup import as_int, as_str, find, first
from otel_bridge.mapping.lookup import counts as usage_counts
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


def _counts(tree: dict[str, Any], rules: Rules, warnings: Counter) -> dict[str, int]:
    counts, unusable = usage_counts(tree, rules.usage)
    if unusable:
        warnings["token_count"] += unusable  # not a count: otel_dump keeps it
    for current, older in _SPELLINGS:
        if current in counts:
            counts.pop(older, None)
    if rules.input_excludes:
        _add_excluded_input(counts, rules.input_excludes)
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


def _add_excluded_input(counts: dict[str, int], excluded: frozenset[str]) -> None:
    """The input count of a convention that leaves out these fields (rules.input_excludes), with them."""
    field = "input_tokens" if "input_tokens" in counts else "prompt_tokens" if "prompt_tokens" in counts else None
    if field is None:
        return
    total = as_int(counts[field] + sum(counts.get(part, 0) for part in excluded))
    if total is not None:
        counts[field] = total


def usage_key(attributes: dict[str, Any], warnings: Counter) -> str:
    """Usage is keyed by model: attributes.model, else model_parameters.model, else "usage". A model that is
    not a name (a dict, a list) keys nothing and is counted as a warning."""
    unusable = False
    for model in (attributes.get("model"), _parameter_model(attributes)):
        if model is None or model == "":
            continue
        name = as_str(model)
        if name is not None:
            return name
        unusable = True
    if unusable:
        warnings["model_name"] += 1
    return "usage"


def _parameter_model(attributes: dict[str, Any]) -> Any:
    parameters = attributes.get("model_parameters")
    return parameters.get("model") if type(parameters) is dict else None


def usage(
    tree: dict[str, Any], span_kind: int, attributes: dict[str, Any], rules: Rules, warnings: Counter
) -> dict[str, dict[str, int]]:
    """A rollup reports nothing; any other span its own counts, and one request when it reports counts or a
    model response (rules.model_responses)."""
    if span_kind != _SPAN_KIND_CLIENT and matches(tree, rules.usage_rollups):
        return {}
    counts = _counts(tree, rules, warnings)
    if counts or first(tree, rules.model_responses) is not None:
        counts["requests"] = 1
    if not counts:
        return {}
    return {usage_key(attributes, warnings): counts}
