"""Kafka messages exactly as the OpenTelemetry Collector's Kafka exporter writes traces, from spans the
real OpenTelemetry SDK recorded (encoded with opentelemetry-exporter-otlp-proto-common's encode_spans).

The exporter's rules (exporter/kafkaexporter in opentelemetry-collector-contrib):
- `otlp_proto`: the value is a serialized ExportTraceServiceRequest; `otlp_json`: the same request as
  OTLP/JSON (pdata's JSON marshaler: lowerCamelCase, hex trace and span ids, enums as integers, 64-bit
  integers as strings, empty fields left out).
- `partition_traces_by_id: true`: one message per trace id (every span of the trace, under its resource
  and scope), keyed by the trace id in hex; the default partitioner (sticky_key, sarama_compat hasher)
  puts a key in partition abs(int32(fnv1a_32(key)) % partitions). Without it: one message, no key.
- headers: `include_metadata_keys` copies client metadata (here `project_id`) into message headers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence

import orjson
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

Message = tuple[bytes | None, bytes, int | None]  # key, value, partition (None: the client picks)


def record_traces(traces: int, spans_per_trace: int, *, first: int = 0, payload: int = 100) -> list[ReadableSpan]:
    """Spans the SDK recorded: `traces` traces of a root and spans_per_trace - 1 children each."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "kafka-test", "wandb.entity": "acme", "wandb.project": "agents"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.collector_kafka", "1.0")
    for t in range(first, first + traces):
        with tracer.start_as_current_span(f"trace {t}", attributes={"input.value": f"{t}:" + "x" * payload}):
            for s in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"step {t}.{s}", attributes={"output.value": "y" * payload}):
                    pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


def call_ids(spans: Sequence[ReadableSpan]) -> set[str]:
    """The call id the bridge gives each span: its span id in hex."""
    return {format(span.context.span_id, "016x") for span in spans}


def _by_trace(request: ExportTraceServiceRequest) -> Iterator[tuple[bytes, ExportTraceServiceRequest]]:
    """What batchpersignal.SplitTraces does: one request per trace id, resources and scopes kept."""
    split: dict[bytes, ExportTraceServiceRequest] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out = split.setdefault(span.trace_id, ExportTraceServiceRequest())
                if not out.resource_spans or out.resource_spans[-1].resource != resource_spans.resource:
                    rs = out.resource_spans.add(resource=resource_spans.resource, schema_url=resource_spans.schema_url)
                rs = out.resource_spans[-1]
                if not rs.scope_spans or rs.scope_spans[-1].scope != scope_spans.scope:
                    rs.scope_spans.add(scope=scope_spans.scope, schema_url=scope_spans.schema_url)
                rs.scope_spans[-1].spans.append(span)
    yield from split.items()


def _hex_ids(span: dict) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in span:
            span[key] = base64.b64decode(span[key]).hex()
    for link in span.get("links", ()):
        _hex_ids(link)


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    doc = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in doc.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span)
    return orjson.dumps(doc)


def sarama_partition(key: bytes, partitions: int) -> int:
    h = 0x811C9DC5
    for byte in key:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    signed = h - (1 << 32) if h & 0x80000000 else h
    partition = abs(int(signed - partitions * int(signed / partitions)))  # Go's %: truncated, sign of the dividend
    return partition


def collector_messages(
    spans: Sequence[ReadableSpan], *, encoding: str, partitions: int, partition_traces_by_id: bool = True
) -> list[Message]:
    request = encode_spans(spans)
    encode = otlp_json if encoding == "otlp_json" else ExportTraceServiceRequest.SerializeToString
    if not partition_traces_by_id:
        return [(None, encode(request), None)]
    messages = []
    for trace_id, part in _by_trace(request):
        key = trace_id.hex().encode()
        messages.append((key, encode(part), sarama_partition(key, partitions)))
    return messages
