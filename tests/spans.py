"""Builders of OTLP protobuf spans and requests for tests: short to write, every field reachable."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otel_bridge.decode import decoded
from otel_bridge.config import Redact
from otel_bridge.decode import decode_request
from otel_bridge.decode.limits import DEFAULT_LIMITS, SpanLimits
from otel_bridge.decode.redact import compile_redaction
from otel_bridge.decode.sanitize import Sanitizer

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN_ID = bytes.fromhex("00f067aa0ba902b7")
START = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
END = START + 1_500_000_000


def any_value(value: Any) -> AnyValue:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attrs(value)))
    if value is None:
        return AnyValue()
    raise TypeError(f"no AnyValue for {type(value).__name__}")


def attrs(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items()]


def span(
    name: str = "chat gpt-4o",
    attributes: dict[str, Any] | None = None,
    *,
    trace_id: bytes = TRACE_ID,
    span_id: bytes = SPAN_ID,
    parent_span_id: bytes = b"",
    start: int = START,
    end: int = END,
    kind: int = Span.SPAN_KIND_CLIENT,
    status_code: int = Status.STATUS_CODE_UNSET,
    status_message: str = "",
    events: list[tuple[str, dict[str, Any]]] | None = None,
    links: list[tuple[bytes, bytes, dict[str, Any]]] | None = None,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=attrs(attributes or {}),
        status=Status(code=status_code, message=status_message),
        events=[Span.Event(name=n, time_unix_nano=start + 1000, attributes=attrs(a)) for n, a in events or []],
        links=[Span.Link(trace_id=t, span_id=s, attributes=attrs(a)) for t, s, a in links or []],
    )


def request(
    *spans: Span,
    resource: dict[str, Any] | None = None,
    scope: tuple[str, str] = ("test.scope", "1.0"),
) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=attrs(resource or {})),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope[0], version=scope[1]), spans=list(spans))],
            )
        ]
    )


NO_REDACTION = compile_redaction(Redact(default_rules=False))


def plain_sanitizer(limits: SpanLimits = DEFAULT_LIMITS) -> Sanitizer:
    """Default limits, no redaction: decoding exactly as sent."""
    return Sanitizer(limits, NO_REDACTION)


def materialized(resources: list[decoded.ResourceSpans]) -> list[decoded.ResourceSpans]:
    """Decoded requests with every ScopeSpans' spans decoded into a list (they are decoded lazily, as iterated),
    so tests can index and compare them, and the sanitizer's tallies are complete."""
    return [
        r._replace(scope_spans=[s._replace(spans=list(s.spans)) for s in r.scope_spans]) for r in resources
    ]


def decoded_span(proto_span: Span, sanitizer: Sanitizer | None = None) -> decoded.Span:
    """A protobuf span as the mapping gets it: in a request, serialized, decoded (limits and redaction of
    `sanitizer`, default: plain_sanitizer())."""
    (resource_spans,) = decode_request(request(proto_span).SerializeToString(), sanitizer or plain_sanitizer())
    (span,) = resource_spans.scope_spans[0].spans
    return span
