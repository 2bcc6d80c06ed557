"""Make one call fit a request: truncate its largest values in inputs, output and otel_dump.

A call whose body alone is over the limit would be refused whole (413). Cutting the biggest values,
with a marker that says so, delivers everything else about the span: ids, times, usage, attributes.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["trim_call", "MARKER"]

# The sections whose values may be cut: the span's content and its dump, never ids, times or usage.
_SECTIONS = ("inputs", "output", "otel_dump")
# Strings are cut down to this many characters at the least; below it, whole values are replaced.
_KEEP = 1024
# ASCII, so its length in characters is its length in bytes.
MARKER = "...[truncated by otel-bridge: {removed} of {total} characters removed]"


def trim_call(call: bytes, limit: int) -> bytes | None:
    """The call, re-encoded at most `limit` bytes long; None when cutting every value is not enough."""
    if len(call) <= limit:
        return call
    data = orjson.loads(call)
    encoded = call
    # Each round shrinks one value; a call has finitely many, so this ends (the bound is a safety net).
    for _ in range(10_000):
        excess = len(encoded) - limit
        if excess <= 0:
            return encoded
        if not (_cut_longest_string(data, excess) or _replace_largest_value(data)):
            return None
        encoded = orjson.dumps(data)
    return None


def _slots(data: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) of every value under the sections, depth first."""
    slots: list[tuple[Any, Any]] = []
    stack: list[tuple[Any, Any]] = [(data, name) for name in _SECTIONS if data.get(name) is not None]
    while stack:
        container, key = stack.pop()
        slots.append((container, key))
        value = container[key]
        if isinstance(value, dict):
            stack.extend((value, k) for k in value)
        elif isinstance(value, list):
            stack.extend((value, i) for i in range(len(value)))
    return slots


def _cut_longest_string(data: dict[str, Any], excess: int) -> bool:
    """Shorten the longest string by the excess (a character is at least one byte), keeping _KEEP of it."""
    strings = [(len(c[k]), c, k) for c, k in _slots(data) if isinstance(c[k], str) and not _is_marked(c[k])]
    if not strings:
        return False
    length, container, key = max(strings, key=lambda s: s[0])
    if length <= _KEEP:
        return False
    marker_length = len(MARKER.format(removed=length, total=length))
    keep = max(_KEEP, length - excess - marker_length)
    if keep >= length:
        return False
    container[key] = container[key][:keep] + MARKER.format(removed=length - keep, total=length)
    return True


def _replace_largest_value(data: dict[str, Any]) -> bool:
    """Replace the largest list or object (many small values) by the start of its JSON, marked. A
    section as a whole (all of inputs, say) only when no value inside it is large enough."""
    largest: tuple[bool, int, Any, Any] | None = None
    for container, key in _slots(data):
        value = container[key]
        if isinstance(value, (dict, list)):
            size = len(orjson.dumps(value))
            candidate = (container is not data, size, container, key)
            if size > _KEEP + len(MARKER) and (largest is None or candidate[:2] > largest[:2]):
                largest = candidate
    if largest is None:
        return False
    _, _, container, key = largest
    text = orjson.dumps(container[key]).decode()
    marked = text[:_KEEP] + MARKER.format(removed=len(text) - _KEEP, total=len(text))
    # inputs and otel_dump must stay objects (the upstream's schema); output may be anything.
    container[key] = {"truncated": marked} if container is data and key != "output" else marked
    return True


def _is_marked(value: str) -> bool:
    return value.endswith(" characters removed]") and "...[truncated by otel-bridge: " in value
