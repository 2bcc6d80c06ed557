"""call.inputs and call.output from the attribute tree."""

from __future__ import annotations

from typing import Any

from otel_bridge.mapping.lookup import first_truthy
from otel_bridge.mapping.rules import Rules

__all__ = ["inputs", "output"]

_WRAPPED_INPUTS = ("input", "inputs")
_WRAPPED_OUTPUTS = ("output", "outputs")


def inputs(tree: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """The first input source found, stored under the key it was found at; a generic `input`/`inputs`
    holding a dict is unwrapped, as Weave's own ingestion does."""
    found = first_truthy(tree, rules.inputs)
    if found is None:
        return {}
    key, value = found
    if key in _WRAPPED_INPUTS and type(value) is dict:
        return value
    return {key: value}


def output(tree: dict[str, Any], rules: Rules) -> Any:
    """Like inputs; a generic `output`/`outputs` is unwrapped whatever its type; nothing found -> {}."""
    found = first_truthy(tree, rules.output)
    if found is None:
        return {}
    key, value = found
    if key in _WRAPPED_OUTPUTS:
        return value
    return {key: value}
