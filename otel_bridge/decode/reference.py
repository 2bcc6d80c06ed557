"""The reference decoder: the bytes of an ExportTraceServiceRequest -> plain data (decoded.py), sanitized
while it is read. The C extension (_decode.c) must match it exactly, and both run one algorithm: each
message's fields are read in the order of their field numbers (the order exporters write them in, and the
order the C decoder meets them on the wire), every string passes through the request's Sanitizer as it is
read, and a list longer than its limit is read up to the limit and the rest counted (count_over), never
cut out of the message afterwards. Protobuf parses the bytes here; the messages are only read.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_bridge.decode.decoded import ROUTING_KEYS, ResourceSpans, ScopeSpans, Span
from otel_bridge.decode.otlp import attribute_tree
from otel_bridge.decode.sanitize import Sanitizer
from otel_bridge.decode.wire import refused

__all__ = ["count_spans_python", "decode_request_python"]


def _parse(data: bytes) -> ExportTraceServiceRequest:
    """The bytes of one OTLP/gRPC or OTLP/HTTP protobuf body -> the request; BadRequestError saying why not."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, sometimes other errors, for garbage
        raise refused(len(data), str(exc).rpartition(": ")[2] or type(exc).__name__) from None
    return request


def _text(value: str, sanitizer: Sanitizer) -> str:
    """A string field that is not an attribute; an absent one (empty) is not the sanitizer's."""
    return sanitizer.text(value) if value else value


def _attributes(
    message: Any, sanitizer: Sanitizer, keys: list[str] | None = None
) -> tuple[dict[str, Any], int]:
    """A message's attribute tree from its first max_attributes attributes, and how many it sent past them
    (to be counted once the message is read, as the C decoder does: see Sanitizer.count_over)."""
    attributes = message.attributes
    seen = len(attributes)
    limit = sanitizer.limits.max_attributes
    return attribute_tree(attributes if seen <= limit else attributes[:limit], sanitizer, keys=keys), seen


def _event(event: Any, sanitizer: Sanitizer, keys: list[str]) -> dict[str, Any]:
    name = _text(event.name, sanitizer)
    tree, seen = _attributes(event, sanitizer, keys)
    dropped = sanitizer.count_over("max_attributes", seen, event.dropped_attributes_count)
    return {"name": name, "timestamp": event.time_unix_nano, "attributes": tree, "dropped_attributes_count": dropped}


def _link(link: Any, sanitizer: Sanitizer) -> dict[str, Any]:
    trace_state = _text(link.trace_state, sanitizer)
    tree, seen = _attributes(link, sanitizer)
    return {
        "trace_id": link.trace_id.hex(),
        "span_id": link.span_id.hex(),
        "trace_state": trace_state,
        "attributes": tree,
        "dropped_attributes_count": sanitizer.count_over("max_attributes", seen, link.dropped_attributes_count),
        "flags": link.flags,
    }


def _span(span: Any, sanitizer: Sanitizer) -> Span:
    limits = sanitizer.limits
    trace_state = _text(span.trace_state, sanitizer)  # field 3
    name = _text(span.name, sanitizer)  # 5
    keys: list[str] = []
    tree, attributes_seen = _attributes(span, sanitizer, keys)  # 9
    events = []  # 11
    event_keys = []
    for event in span.events[: limits.max_events]:
        kept: list[str] = []
        events.append(_event(event, sanitizer, kept))
        event_keys.append(kept)
    links = [_link(link, sanitizer) for link in span.links[: limits.max_links]]  # 13
    status = span.status  # 15
    status_message = _text(status.message, sanitizer)
    return Span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        trace_state=trace_state,
        flags=span.flags,
        name=name,
        kind=span.kind,
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        attributes=tree,
        attribute_keys=keys,
        dropped_attributes_count=sanitizer.count_over("max_attributes", attributes_seen, span.dropped_attributes_count),
        events=events,
        event_attribute_keys=event_keys,
        dropped_events_count=sanitizer.count_over("max_events", len(span.events), span.dropped_events_count),
        links=links,
        dropped_links_count=sanitizer.count_over("max_links", len(span.links), span.dropped_links_count),
        status_code=status.code,
        status_message=status_message,
    )


def _scope_spans(scope_spans: Any, sanitizer: Sanitizer) -> ScopeSpans:
    scope = scope_spans.scope
    name = _text(scope.name, sanitizer)
    version = _text(scope.version, sanitizer)
    tree, seen = _attributes(scope, sanitizer)
    scope_dict = {
        "name": name,
        "version": version,
        "attributes": tree,
        "dropped_attributes_count": sanitizer.count_over("max_attributes", seen, scope.dropped_attributes_count),
    }
    return ScopeSpans(scope_dict, (_span(span, sanitizer) for span in scope_spans.spans))


def _routing(resource: Any) -> dict[str, str]:
    """The routing attributes as sent, from all the resource's attributes (max_attributes cuts content only)."""
    routing: dict[str, str] = {}
    for kv in resource.attributes:
        if kv.key in ROUTING_KEYS:
            if kv.value.WhichOneof("value") == "string_value":
                routing[kv.key] = kv.value.string_value
            else:
                routing.pop(kv.key, None)
    return routing


def decode_request_python(data: bytes, sanitizer: Sanitizer) -> list[ResourceSpans]:
    """The reference decoder: every resource, scope and span, limits and redaction applied by `sanitizer`.
    Raises BadRequestError when the bytes are not an ExportTraceServiceRequest."""
    decoded = []
    for resource_spans in _parse(data).resource_spans:
        resource = resource_spans.resource
        tree, seen = _attributes(resource, sanitizer)
        scopes = [_scope_spans(scope_spans, sanitizer) for scope_spans in resource_spans.scope_spans]
        resource_dict = {  # counted after the scopes, as the C decoder finishes the resource after its field 2
            "attributes": tree,
            "dropped_attributes_count": sanitizer.count_over("max_attributes", seen, resource.dropped_attributes_count),
        }
        decoded.append(ResourceSpans(resource_dict, scopes, _routing(resource)))
    return decoded


def count_spans_python(data: bytes) -> int:
    """The spans in a serialized request; BadRequestError as decode_request_python when it is not one."""
    request = _parse(data)
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
