"""Limits and redaction applied to span content while it is decoded, and a tally of what they changed.

One Sanitizer serves one request. Both decoders pass every string through it as they read it and count
what a limit cut with it; the reference decoder (reference.py, otlp.attribute_tree) calls its methods, the C
decoder gets them and the limits it needs in one NativeInterface (`native()`), the whole of what it takes
from Python per request.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, NamedTuple

from otel_bridge.decode.limits import SpanLimits, deeper_than, too_deep, truncated_bytes, truncated_text
from otel_bridge.decode.redact import Redaction

__all__ = ["NativeInterface", "Sanitizer"]

_UINT32_MAX = 2**32 - 1  # dropped_*_count fields are uint32; a hostile count must not overflow them


class NativeInterface(NamedTuple):
    """What the C decoder takes from a request's Sanitizer: read by position, once per request (ctx_init in
    _decode.c follows this order), so no attribute is looked up by name while a request is decoded."""

    max_attributes: int
    max_events: int
    max_links: int
    max_depth: int
    text_plan: tuple[int, bool, int, tuple[tuple[int, tuple[str, ...]], ...]]
    json_plan: tuple[bool, tuple[str, ...]] | None
    key_verdicts: dict[str, bool] | None
    text: Callable[[str], str]
    key: Callable[[str], str]
    json_content: Callable[[Any, str], Any]
    blob: Callable[[bytes], str]
    drops: Callable[[str], bool]
    too_deep: Callable[[], str]
    too_deep_key: Callable[[], None]
    nested: Callable[[Any, str, int], Any]
    hit: Callable[[str, int], None]


class Sanitizer:
    __slots__ = (
        "limits",
        "max_depth",
        "_max_length",
        "_redact",
        "key_verdicts",
        "_redaction",
        "hits",
        "redacted_values",
        "dropped_keys",
        "_too_deep",
        "text_plan",
        "json_plan",
    )

    def __init__(self, limits: SpanLimits, redaction: Redaction) -> None:
        self.limits = limits
        self.max_depth = limits.max_depth
        self._max_length = limits.max_attribute_value_length
        self._redact = redaction.text if redaction.enabled else None
        # key -> dropped?, shared across requests since keys repeat; None when there are no key rules. The
        # hot path reads it directly and calls drops() only for a key not seen yet or to be dropped.
        self.key_verdicts = redaction.key_verdicts if redaction.drops_keys else None
        self._redaction = redaction
        self.hits: dict[str, int] = {}  # mapping.limits key -> values, attributes, events or links cut
        self.redacted_values = 0
        self.dropped_keys = 0
        self._too_deep = too_deep(limits.max_depth)
        # When text(s) may change s (see Redaction.text_plan), so the C decoder skips the call otherwise:
        # (max_length, call_always, min_length, rules).
        self.text_plan = (self._max_length, *redaction.text_plan)
        # When decoded JSON text is walked (Redaction.json_plan); None: never, nothing could change it.
        self.json_plan = redaction.json_plan if redaction.enabled or redaction.drops_keys else None

    def hit(self, limit: str, count: int = 1) -> None:
        """Count `count` values, attributes, events or links cut by `limit` (a mapping.limits key)."""
        self.hits[limit] = self.hits.get(limit, 0) + count

    def count_over(self, limit: str, seen: int, dropped: int) -> int:
        """A list of `seen` items read up to `limit` (a mapping.limits key): counts what it cut, and returns the
        message's dropped_*_count with the cut added, as an SDK would count it."""
        excess = seen - getattr(self.limits, limit)
        if excess <= 0:
            return dropped
        self.hit(limit, excess)
        return min(dropped + excess, _UINT32_MAX)

    def native(self) -> NativeInterface:
        limits = self.limits
        return NativeInterface(
            limits.max_attributes,
            limits.max_events,
            limits.max_links,
            limits.max_depth,
            self.text_plan,
            self.json_plan,
            self.key_verdicts,
            self.text,
            self.key,
            self.json_content,
            self.blob,
            self.drops,
            self.too_deep,
            self.too_deep_key,
            self.nested,
            self.hit,
        )

    def drops(self, key: str) -> bool:
        """Whether to drop this key, counting it when so."""
        verdicts = self.key_verdicts
        if verdicts is None:
            return False
        verdict = verdicts.get(key)
        if verdict is None:
            verdict = self._redaction.drops(key)
        if verdict:
            self.dropped_keys += 1
        return verdict

    def text(self, value: str) -> str:
        """A string the span carries: redacted, then cut to the length limit (after redaction, so a secret
        across the cut is still found whole)."""
        redact = self._redact
        if redact is not None:
            redacted = redact(value)
            if redacted is not value:
                self.redacted_values += 1
                if len(redacted) > self._max_length:
                    self.hit("max_attribute_value_length")
                    return truncated_text(redacted, self._max_length, len(value))
                return redacted
        if len(value) > self._max_length:
            self.hit("max_attribute_value_length")
            return truncated_text(value, self._max_length, len(value))
        return value

    def key(self, key: str) -> str:
        """An attribute or map key as stored: redacted (never cut: keys are not values). Whether to drop it is
        drops()'s, on the key as sent."""
        if self._redact is None:
            return key
        text = self._redaction.key_text(key)
        if text != key:
            self.redacted_values += 1
            return text
        return key

    def walks_json(self, source: str) -> bool:
        """Whether JSON text `source`, once decoded to a map or array, is walked by json_content."""
        return self.json_plan is not None and self._redaction.walks_json(source)

    def json_content(self, value: Any, path: str) -> Any:
        """A map or array decoded from JSON text, as a kvlist sent the same is kept: keys that the key rules
        name (matched as `path.key`) dropped, keys and strings redacted once their escapes are decoded."""
        if type(value) is dict:
            result = {}
            verdicts = self.key_verdicts
            for key, item in value.items():
                key_path = f"{path}.{key}"
                if verdicts is not None and verdicts.get(key_path) is not False and self.drops(key_path):
                    continue
                result[self.key(key)] = self.json_content(item, key_path)
            return result
        if type(value) is list:
            return [self.json_content(item, path) for item in value]
        if type(value) is str and self._redact is not None:
            redacted = self._redact(value)
            if redacted is not value:
                self.redacted_values += 1
            return redacted
        return value

    def blob(self, value: bytes) -> str:
        """A bytes value, base64 as in Weave's own ingestion; cut to the length limit in bytes. Redacted first,
        read as Latin-1 (one character per byte, so a secret in ASCII is found in any binary), and the bytes
        of a match replaced."""
        redact = self._redact
        if redact is not None:
            text = value.decode("latin-1")
            redacted = redact(text)
            if redacted is not text:
                self.redacted_values += 1
                value = redacted.encode("latin-1")
        if len(value) > self._max_length:
            self.hit("max_attribute_value_length")
            return truncated_bytes(value, self._max_length)
        return base64.b64encode(value).decode("ascii")

    def too_deep(self) -> str:
        """The marker for a map or array of an AnyValue nested past the depth limit."""
        self.hit("max_depth")
        return self._too_deep

    def too_deep_key(self) -> None:
        """A dotted key of more parts than the depth limit: it is kept whole, not unflattened."""
        self.hit("max_depth")

    def nested(self, value: Any, source: str, levels: int) -> Any:
        """`value`, decoded from the JSON text `source`; the text itself when it opens more than `levels`
        levels of maps and arrays (nothing is lost, and the call stays within what a JSON writer nests).
        It cannot open more levels than it has opening brackets, so most values are not walked."""
        if source.count("{") + source.count("[") <= levels or not deeper_than(value, levels):
            return value
        self.hit("max_depth")
        return source
