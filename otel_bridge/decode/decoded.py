"""What the decoder hands the mapping: an ExportTraceServiceRequest as plain data, already sanitized.

Attribute lists arrive as attribute trees (see otlp.attribute_tree): limits and redaction were applied while
the bytes were read, so nothing here holds what they remove; the bytes were checked whole before anything
was decoded, so iterating the spans raises no decoding error. Resources, scopes, events and links are in
the shape otel_dump writes them; spans keep what the mapping reads besides.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

__all__ = ["ROUTING_KEYS", "ResourceSpans", "ScopeSpans", "Span"]


class Span(NamedTuple):
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    trace_state: str
    flags: int
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]  # the attribute tree
    attribute_keys: list[str]  # the keys kept, as sent (dotted), for Rules.narrowed
    dropped_attributes_count: int
    # {"name", "timestamp", "attributes" (tree), "dropped_attributes_count"}, as otel_dump writes them
    events: list[dict[str, Any]]
    event_attribute_keys: list[list[str]]  # per event, the keys kept, as sent
    dropped_events_count: int
    # {"trace_id" (hex), "span_id" (hex), "trace_state", "attributes" (tree), "dropped_attributes_count", "flags"}
    links: list[dict[str, Any]]
    dropped_links_count: int
    status_code: int
    status_message: str


class ScopeSpans(NamedTuple):
    scope: dict[str, Any]  # {"name", "version", "attributes" (tree), "dropped_attributes_count"}
    # Decoded one at a time as they are iterated (once): a request's spans never all exist at once, so the
    # memory of one span's objects is reused, still in cache, for the next (about 20% faster at 512 spans).
    spans: Iterator[Span]


# Resource attributes that route a request's spans (mapping/request.py): read as sent, never redacted
# (redaction is for content; a project named like an e-mail address must still get its spans).
ROUTING_KEYS = ("wandb.entity", "wandb.project")


class ResourceSpans(NamedTuple):
    resource: dict[str, Any]  # {"attributes" (tree), "dropped_attributes_count"}
    scope_spans: list[ScopeSpans]
    routing: dict[str, str] = {}  # ROUTING_KEYS that are string values -> the value as sent (the last one)
