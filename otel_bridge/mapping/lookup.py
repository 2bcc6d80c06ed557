"""Finding values in a span's attribute tree by the rule tables' key paths."""

from __future__ import annotations

from typing import Any

from otel_bridge.mapping.rules import Source
from otel_bridge.otlp import CONFLICT_KEY

__all__ = ["find", "first", "first_present", "first_truthy", "as_int", "as_str"]


def find(tree: Any, path: tuple[str, ...]) -> Any:
    """The value at a key path, walking dicts by key and lists by index; None when absent."""
    node = tree
    for part in path:
        if type(node) is dict:
            node = node.get(part)
            if node is None:
                return None
        elif type(node) is list and part.isdigit():
            index = int(part)
            if index >= len(node):
                return None
            node = node[index]
        else:
            return None
    return node


def first_truthy(tree: dict[str, Any], sources: tuple[Source, ...]) -> tuple[str, Any] | None:
    """The first source whose value is present and non-empty, as (key as written, value)."""
    for key, path in sources:
        value = find(tree, path)
        if value:
            return key, value
    return None


def first(tree: dict[str, Any], sources: tuple[Source, ...]) -> Any:
    found = first_truthy(tree, sources)
    return None if found is None else found[1]


def first_present(tree: dict[str, Any], sources: tuple[Source, ...]) -> Any:
    """The first source whose value is present, even when it is 0 or False."""
    for _, path in sources:
        value = find(tree, path)
        if value is not None:
            return value
    return None


def as_int(value: Any) -> int | None:
    """Token counts arrive as ints, floats or strings depending on the instrumentation. A number that does
    not fit in 64 bits (a float like 1e300, a string of 30 digits) is not a count, and JSON could not carry it."""
    if type(value) is dict:
        # `x` beside `x.y` (e.g. gen_ai.usage.input_tokens and Sentry's gen_ai.usage.input_tokens.cached):
        # the scalar sent for `x` is kept under CONFLICT_KEY.
        value = value.get(CONFLICT_KEY)
    kind = type(value)
    if kind is int:
        number = value
    elif kind is float and value.is_integer():
        number = int(value)
    elif kind is str:
        try:
            number = int(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if _INT64_MIN <= number <= _INT64_MAX else None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def as_str(value: Any) -> str | None:
    if type(value) is dict:
        value = value.get(CONFLICT_KEY)  # a scalar `x` beside `x.y`, as in as_int
    if value is None or value == "":
        return None
    if type(value) is str:
        return value
    if type(value) in (int, float, bool):
        return str(value)
    return None
