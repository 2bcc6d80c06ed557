"""Finding values in a span's attribute tree by the rule tables' key paths, and the calls' time format."""

from __future__ import annotations

from typing import Any

from otel_bridge.mapping.rules import Source
from otel_bridge.decode.otlp import CONFLICT_KEY, iso_time

__all__ = [
    "NATIVE", "REFERENCE", "find", "first", "first_present", "first_truthy", "first_of_each", "counts", "as_int",
    "as_str", "as_bool", "iso_time",
]

# The schema's integers are 64-bit upstream; a larger count is not a count (and orjson cannot write it).
_INT64_MAX = 2**63 - 1


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
        if path[0] in tree:  # most sources belong to conventions the span does not use
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
        if path[0] in tree:
            value = find(tree, path)
            if value is not None:
                return value
    return None


def first_of_each(
    trees: tuple[dict[str, Any], ...], table: tuple[tuple[str, tuple[Source, ...]], ...]
) -> dict[str, Any]:
    """For each (name, sources) row: the first truthy value of its sources (`first`) in the first of the
    trees that has one, under its name; rows found in no tree are left out."""
    found: dict[str, Any] = {}
    for name, sources in table:
        for tree in trees:
            value = first(tree, sources)
            if value is not None:
                found[name] = value
                break
    return found


def counts(tree: dict[str, Any], table: tuple[tuple[str, tuple[Source, ...]], ...]) -> tuple[dict[str, int], int]:
    """For each (field, sources) row: the first source whose value is a count (as_int), under the field; and
    how many values present were not counts (the next source is tried after each)."""
    found: dict[str, int] = {}
    unusable = 0
    for field, sources in table:
        for _, path in sources:
            if path[0] in tree:
                value = find(tree, path)
                if value is None:
                    continue
                count = as_int(value)  # 0 is a real count
                if count is None:
                    unusable += 1
                    continue
                found[field] = count
                break
    return found, unusable


def _scalar(value: Any) -> Any:
    # `x` beside `x.y` (e.g. gen_ai.usage.input_tokens and Sentry's gen_ai.usage.input_tokens.cached): the
    # scalar sent for `x` is kept under CONFLICT_KEY.
    return value.get(CONFLICT_KEY) if type(value) is dict else value


def as_int(value: Any) -> int | None:
    """A count: a non-negative integer, sent as an int, an integral float or a string of ASCII digits
    (instrumentations send all three). Anything else (negative, "1_000", "+7", non-ASCII digits, past
    64 bits) is not a count: None."""
    value = _scalar(value)
    kind = type(value)
    if kind is float and value.is_integer():
        value = int(value)
    elif kind is str:
        if not (value.isascii() and value.isdigit()):
            return None
        value = int(value)
    elif kind is not int:
        return None
    return value if 0 <= value <= _INT64_MAX else None


def as_str(value: Any) -> str | None:
    value = _scalar(value)
    if value is None or value == "":
        return None
    if type(value) is str:
        return value
    if type(value) in (int, float, bool):
        return str(value)
    return None


def as_bool(value: Any) -> bool | None:
    """A boolean, also when an SDK sent it as the string "true" or "false"."""
    value = _scalar(value)
    if type(value) is bool:
        return value
    if type(value) is str and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


# The functions above (and otlp.iso_time) are the reference; otel_bridge/mapping/_lookup.c has the same ones
# without the interpreter's cost per call, and the mapping uses those when the extension is built.
REFERENCE = {
    f.__name__: f
    for f in (find, first_truthy, first, first_present, first_of_each, counts, as_int, as_str, as_bool, iso_time)
}
try:
    from otel_bridge.mapping import _lookup  # type: ignore[attr-defined]
except ImportError:
    _lookup = None
NATIVE = _lookup is not None
if _lookup is not None:
    find, first_truthy, first, first_present = _lookup.find, _lookup.first_truthy, _lookup.first, _lookup.first_present
    first_of_each, counts = _lookup.first_of_each, _lookup.counts
    as_int, as_str, as_bool, iso_time = _lookup.as_int, _lookup.as_str, _lookup.as_bool, _lookup.iso_time
