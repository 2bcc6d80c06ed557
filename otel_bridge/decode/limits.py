"""Span limits: how much one span may carry into a call.

A receiver open to a cluster sees megabyte values, thousands of attributes and values nested without end.
Past a limit the bridge cuts and marks the cut where it is visible (a marker in the value, a dropped count
in otel_dump), or keeps as sent what it need not take apart (a dotted key, JSON text), counts it, and keeps
the span. The defaults are generous for real LLM traffic (long prompts,
long conversations) and keep one span from swamping the bridge, a batch or the upstream.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from otel_bridge.config import Limits

__all__ = [
    "DEFAULT_LIMITS",
    "SpanLimits",
    "deeper_than",
    "limit_warnings",
    "too_deep",
    "truncated_bytes",
    "truncated_text",
]

@dataclass(frozen=True, slots=True)
class SpanLimits:
    max_attribute_value_length: int  # characters of a string, bytes of a bytes value
    max_attributes: int  # per attribute list: the span's, each event's and link's, the resource's and scope's
    max_events: int
    max_links: int
    max_depth: int  # levels of maps and arrays an attribute makes, each part of a dotted key counting as one

    @classmethod
    def from_config(cls, config: Limits) -> SpanLimits:
        return cls(**config.model_dump())


DEFAULT_LIMITS = SpanLimits.from_config(Limits())

# What a limit hit did, for the partial_success warning: (count, limit) -> text.
_LIMIT_WARNINGS = {
    "max_attribute_value_length": "{n} values cut to {limit} characters or bytes (mapping.limits.max_attribute_value_length)",
    "max_attributes": "{n} attributes dropped over {limit} per list (mapping.limits.max_attributes)",
    "max_events": "{n} events dropped over {limit} per span (mapping.limits.max_events)",
    "max_links": "{n} links dropped over {limit} per span (mapping.limits.max_links)",
    "max_depth": "{n} values nested deeper than {limit} levels kept as sent or cut (mapping.limits.max_depth)",
}


def limit_warnings(hits: dict[str, int], limits: SpanLimits) -> list[str]:
    """What the limits cut (a Sanitizer's hits), as partial_success warnings: in the table's order, so a
    client sees the same sentence for the same cuts whatever order the spans met them in."""
    return [
        text.format(n=hits[limit], limit=getattr(limits, limit)) for limit, text in _LIMIT_WARNINGS.items() if limit in hits
    ]


def truncated_text(text: str, limit: int, sent_length: int) -> str:
    return f"{text[:limit]}...[truncated: {sent_length} chars]"


def truncated_bytes(data: bytes, limit: int) -> str:
    return base64.b64encode(data[:limit]).decode("ascii") + f"...[truncated: {len(data)} bytes]"


def too_deep(max_depth: int) -> str:
    return f"[truncated: nested deeper than {max_depth} levels]"


def deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` opens more than `levels` levels of maps and arrays (itself the first)."""
    stack = [(value, 1)]
    children: Iterable[Any]
    while stack:
        node, depth = stack.pop()
        if type(node) is dict:
            children = node.values()
        elif type(node) is list:
            children = node
        else:
            continue
        if depth > levels:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
