"""call.otel_dump: the whole span as JSON, so nothing the exporter sent is lost.

The shape follows Weave's own ingestion (name, context, kind, parent_id, times, status, attributes,
events, links, resource) and adds what it leaves out: the instrumentation scope, flags, dropped counts
and the exact nanosecond times.
"""

from __future__ import annotations

from typing import Any

from otel_bridge.decode.decoded import Span

__all__ = ["span_dump", "SPAN_KIND_NAMES", "STATUS_CODE_NAMES"]

SPAN_KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODE_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


def span_dump(
    span: Span,
    *,
    start_time: str,
    end_time: str,
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    resource: dict[str, Any],
    scope: dict[str, Any],
) -> dict[str, Any]:
    """The span as JSON; start_time/end_time are its times as ISO 8601 (iso_time) and the ids as hex, built
    once by the caller. The attribute trees, events, links, resource and scope are the decoder's, as they
    are after the mapping's rewrites."""
    code = span.status_code
    return {
        "name": span.name,
        "context": {"trace_id": trace_id, "span_id": span_id, "trace_state": span.trace_state},
        "kind": SPAN_KIND_NAMES.get(span.kind, str(span.kind)),
        "parent_id": parent_id,
        "start_time": start_time,
        "end_time": end_time,
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "status": {"code": STATUS_CODE_NAMES.get(code, str(code)), "message": span.status_message},
        "attributes": span.attributes,
        "dropped_attributes_count": span.dropped_attributes_count,
        "events": span.events,
        "dropped_events_count": span.dropped_events_count,
        "links": span.links,
        "dropped_links_count": span.dropped_links_count,
        "flags": span.flags,
        "resource": resource,
        "scope": scope,
    }
