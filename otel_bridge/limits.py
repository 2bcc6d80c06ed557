"""Span limits: how much one span may carry into a call.

A receiver open to a cluster sees megabyte values, thousands of attributes and values nested without end.
Past a limit the bridge cuts, marks the cut where it is visible (a marker in the value, a dropped count in
otel_dump), counts it, and keeps the span. The defaults are generous for real LLM traffic (long prompts,
long conversations) and keep one span from swamping the bridge, a batch or the upstream.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from otel_bridge.config import Limits

__all__ = ["DEFAULT_LIMITS", "LIMIT_KEYS", "SpanLimits", "cut_depth", "split_key", "too_deep", "truncated_bytes", "truncated_text"]

# The config keys under mapping.limits, also the `limit` label of the limit-hit metric.
LIMIT_KEYS = ("max_attribute_value_length", "max_attributes", "max_events", "max_links", "max_depth")


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


def truncated_text(text: str, limit: int, sent_length: int) -> str:
    return f"{text[:limit]}...[truncated: {sent_length} chars]"


def truncated_bytes(data: bytes, limit: int) -> str:
    return base64.b64encode(data[:limit]).decode("ascii") + f"...[truncated: {len(data)} bytes]"


def too_deep(max_depth: int) -> str:
    return f"[truncated: nested deeper than {max_depth} levels]"


def split_key(key: str, max_depth: int) -> list[str]:
    """A dotted key -> its path, at most `max_depth` parts: the last part keeps the rest of the key, dots and
    all, so nothing is lost and the tree stays shallow."""
    parts = key.split(".")
    if len(parts) > max_depth:
        parts[max_depth - 1 :] = [".".join(parts[max_depth - 1 :])]
    return parts


def cut_depth(value: Any, levels: int, marker: str) -> tuple[Any, int]:
    """`value` with every map or array below `levels` levels replaced by `marker`; and how many were."""
    if type(value) is dict:
        if levels <= 0:
            return marker, 1
        cuts = 0
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key], n = cut_depth(item, levels - 1, marker)
            cuts += n
        return out, cuts
    if type(value) is list:
        if levels <= 0:
            return marker, 1
        cuts = 0
        items = []
        for item in value:
            item, n = cut_depth(item, levels - 1, marker)
            items.append(item)
            cuts += n
        return items, cuts
    return value, 0
