"""Limits and redaction applied to span content while it is decoded, and a tally of what they changed.

One Sanitizer serves one request. The decoder (decode.py; otlp.attribute_tree) passes every value through
it as it reads it; in the reference decoder, `message()`, `scope()`, `span()` cut the lists and redact the
strings that are not attributes (names, status messages, trace states) of the protobuf messages. The C
decoder reads `limits`, `key_verdicts` and `text_plan` and calls the other public methods itself.
"""

from __future__ import annotations

import base64
from typing import Any

from otel_bridge.decode.limits import SpanLimits, deeper_than, too_deep, truncated_bytes, truncated_text
from otel_bridge.decode.redact import Redaction

__all__ = ["Sanitizer"]

_UINT32_MAX = 2**32 - 1  # dropped_*_count fields are uint32; a hostile count must not overflow them


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

    def hit(self, limit: str, count: int = 1) -> None:
        """Count `count` values, attributes, events or links cut by `limit` (a mapping.limits key)."""
        self.hits[limit] = self.hits.get(limit, 0) + count

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

    def blob(self, value: bytes) -> str:
        """A bytes value, base64 as in Weave's own ingestion; cut to the length limit in bytes."""
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

    def message(self, message: Any) -> None:
        """Cut the attribute list of a Resource, InstrumentationScope, Span, Event or Link to the limit,
        counting the rest in its dropped_attributes_count as an SDK would."""
        attributes = message.attributes
        excess = len(attributes) - self.limits.max_attributes
        if excess > 0:
            del attributes[self.limits.max_attributes :]
            message.dropped_attributes_count = min(message.dropped_attributes_count + excess, _UINT32_MAX)
            self.hit("max_attributes", excess)

    def _field(self, message: Any, name: str) -> None:
        value = getattr(message, name)
        if value:
            cleaned = self.text(value)
            if cleaned is not value:
                setattr(message, name, cleaned)

    def scope(self, scope: Any) -> None:
        self.message(scope)
        self._field(scope, "name")
        self._field(scope, "version")

    def span(self, span: Any) -> None:
        """Cut a span's lists to the limits and clean its strings that are not attributes, in place, before
        the mapping reads the span."""
        limits = self.limits
        if len(span.attributes) > limits.max_attributes:
            self.message(span)
        events = span.events
        if events:
            excess = len(events) - limits.max_events
            if excess > 0:
                del events[limits.max_events :]
                span.dropped_events_count = min(span.dropped_events_count + excess, _UINT32_MAX)
                self.hit("max_events", excess)
            for event in events:
                self.message(event)
                self._field(event, "name")
        links = span.links
        if links:
            excess = len(links) - limits.max_links
            if excess > 0:
                del links[limits.max_links :]
                span.dropped_links_count = min(span.dropped_links_count + excess, _UINT32_MAX)
                self.hit("max_links", excess)
            for link in links:
                self.message(link)
                self._field(link, "trace_state")
        text = self.text
        name = span.name
        if name:
            cleaned = text(name)
            if cleaned is not name:
                span.name = cleaned
        if span.trace_state:
            self._field(span, "trace_state")
        status = span.status
        message = status.message
        if message:
            cleaned = text(message)
            if cleaned is not message:
                status.message = cleaned
