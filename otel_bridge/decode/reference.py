"""The reference decoder: the bytes of an ExportTraceServiceRequest -> plain data (decoded.py), sanitized
while it is read. The C extension (_decode.c) must match it exactly: it parses with protobuf and walks the
messages, passing every list and string through the request's Sanitizer in the same order (the tallies of
what limits and redaction changed are part of the result).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_bridge.decode.decoded import ResourceSpans, ScopeSpans, Span
from otel_bridge.errors import BadRequestError
from otel_bridge.decode.otlp import attribute_tree
from otel_bridge.decode.sanitize import Sanitizer

__all__ = ["count_spans_python", "decode_request_python"]

_DECODE_HINTS = {
    "Wire format was corrupt": " (truncated, or not protobuf at all)",
    "String field had bad UTF-8": " (protobuf requires UTF-8 in strings; send binary data as bytes values)",
    "Exceeded upb_DecodeOptions_MaxDepth": " (values nest deeper than the decoder's 100 message levels)",
}


def _parse(data: bytes) -> ExportTraceServiceRequest:
    """The bytes of one OTLP/gRPC or OTLP/HTTP protobuf body -> the request; BadRequestError saying why not."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, sometimes other errors, for garbage
        detail = str(exc).rpartition(": ")[2] or type(exc).__name__
        hint = _DECODE_HINTS.get(detail, "")
        raise BadRequestError(
            f"request ({len(data)} bytes) is not a protobuf ExportTraceServiceRequest: {detail}{hint}"
        ) from None
    return request


def _span(span: Any, sanitizer: Sanitizer) -> Span:
    sanitizer.span(span)  # cuts the lists, cleans name, trace_state, status message, event names, link trace_states
    keys: list[str] = []
    tree = attribute_tree(span.attributes, sanitizer, keys=keys)
    events = []
    event_keys = []
    for event in span.events:
        kept: list[str] = []
        events.append(
            {
                "name": event.name,
                "timestamp": event.time_unix_nano,
                "attributes": attribute_tree(event.attributes, sanitizer, keys=kept),
                "dropped_attributes_count": event.dropped_attributes_count,
            }
        )
        event_keys.append(kept)
    links = [
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
    status = span.status
    return Span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        trace_state=span.trace_state,
        flags=span.flags,
        name=span.name,
        kind=span.kind,
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        attributes=tree,
        attribute_keys=keys,
        dropped_attributes_count=span.dropped_attributes_count,
        events=events,
        event_attribute_keys=event_keys,
        dropped_events_count=span.dropped_events_count,
        links=links,
        dropped_links_count=span.dropped_links_count,
        status_code=status.code,
        status_message=status.message,
    )


def decode_request_python(data: bytes, sanitizer: Sanitizer) -> list[ResourceSpans]:
    """The reference decoder: every resource, scope and span, limits and redaction applied by `sanitizer`.
    Raises BadRequestError when the bytes are not an ExportTraceServiceRequest."""
    decoded = []
    for resource_spans in _parse(data).resource_spans:
        resource = resource_spans.resource
        sanitizer.message(resource)
        resource_dict = {
            "attributes": attribute_tree(resource.attributes, sanitizer),
            "dropped_attributes_count": resource.dropped_attributes_count,
        }
        scopes = []
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            sanitizer.scope(scope)
            scope_dict = {
                "name": scope.name,
                "version": scope.version,
                "attributes": attribute_tree(scope.attributes, sanitizer),
                "dropped_attributes_count": scope.dropped_attributes_count,
            }
            scopes.append(ScopeSpans(scope_dict, (_span(span, sanitizer) for span in scope_spans.spans)))
        decoded.append(ResourceSpans(resource_dict, scopes))
    return decoded


def count_spans_python(data: bytes) -> int:
    """The spans in a serialized request; BadRequestError as decode_request_python when it is not one."""
    request = _parse(data)
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
