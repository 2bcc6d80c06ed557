"""call.otel_dump: the whole span as JSON, so nothing the exporter sent is lost.

The shape follows Weave's own ingestion (name, context, kind, parent_id, times, status, attributes,
events, links, resource) and adds what it leaves out: the instrumentation scope, flags, dropped counts
and the exact nanosecond times.
"""

from __future__ import annotations

from typing import Any

from otel_bridge.otlp import attribute_tree
from otel_bridge.sanitize import Sanitizer

__all__ = ["resource_dump", "scope_dump", "span_dump", "SPAN_KIND_NAMES", "STATUS_CODE_NAMES"]

SPAN_KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODE_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


def resource_dump(resource: Any, tree: dict[str, Any]) -> dict[str, Any]:
    return {"attributes": tree, "dropped_attributes_count": resource.dropped_attributes_count}


def scope_dump(scope: Any, sanitizer: Sanitizer) -> dict[str, Any]:
    return {
        "name": scope.name,
        "version": scope.version,
        "attributes": attribute_tree(scope.attributes, sanitizer),
        "dropped_attributes_count": scope.dropped_attributes_count,
    }


def _events(span: Any, event_trees: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "timestamp": event.time_unix_nano,
            "attributes": tree,
            "dropped_attributes_count": event.dropped_attributes_count,
        }
        for event, (name, tree) in zip(span.events, event_trees)
    ]


def _links(span: Any, sanitizer: Sanitizer) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            "trace_state": link.trace_state,
            "attributes": attribute_tree(link.attributes, sanitizer),
            "dropped_attributes_count": link.dropped_attributes_count,
            "flags": link.flags,
        }
        for link in span.links
    ]


def span_dump(
    span: Any,
    *,
    start_time: str,
    end_time: str,
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    tree: dict[str, Any],
    event_trees: list[tuple[str, dict[str, Any]]],
    resource: dict[str, Any],
    scope: dict[str, Any],
    sanitizer: Sanitizer,
) -> dict[str, Any]:
    """The span as JSON; `event_trees` are the (name, attribute tree) of its events and start_time/end_time
    its times as ISO 8601 (iso_time), built once by the caller."""
    status = span.status
    return {
        "name": span.name,
        "context": {"trace_id": trace_id, "span_id": span_id, "trace_state": span.trace_state},
        "kind": SPAN_KIND_NAMES.get(span.kind, str(span.kind)),
        "parent_id": parent_id,
        "start_time": start_time,
        "end_time": end_time,
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "status": {"code": STATUS_CODE_NAMES.get(status.code, str(status.code)), "message": status.message},
        "attributes": tree,
        "dropped_attributes_count": span.dropped_attributes_count,
        "events": _events(span, event_trees) if event_trees else [],
        "dropped_events_count": span.dropped_events_count,
        "links": _links(span, sanitizer) if span.links else [],
        "dropped_links_count": span.dropped_links_count,
        "flags": span.flags,
        "resource": resource,
        "scope": scope,
    }
