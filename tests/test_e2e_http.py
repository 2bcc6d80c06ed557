"""End to end over OTLP/HTTP: the SDK's HTTP exporter, protobuf and JSON POSTs, gzip, and every refusal,
against a real bridge and a real upstream. The calls must be the same as over gRPC."""

from __future__ import annotations

import base64
import gzip
import json
import tracemalloc
import zlib
from itertools import count

import grpc
import httpx
import pytest
from conftest import bridge_settings
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from spans import request, span

from otel_bridge.receiver.inflate import TooLargeError, inflate

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ROUTED = {"wandb.entity": "e", "wandb.project": "p"}
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


class _CountingIds(IdGenerator):
    """The same ids in the same order for every provider, so two runs make identical spans."""

    def __init__(self) -> None:
        self._span_ids = count(0x1000)
        self._trace_ids = count(0xABC0)

    def generate_span_id(self) -> int:
        return next(self._span_ids)

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)


def _run_workload(exporter) -> None:
    """A small agent trace with explicit times: GenAI attributes, an event, an error, nesting."""
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}), id_generator=_CountingIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.workload", "1.0")
    root = tracer.start_span("invoke_agent planner", start_time=T0)
    root.set_attribute("gen_ai.conversation.id", "conv-1")
    context = trace.set_span_in_context(root)
    llm = tracer.start_span("chat gpt-4o", context=context, start_time=T0 + 1_000)
    llm.set_attribute("gen_ai.request.model", "gpt-4o")
    llm.set_attribute("gen_ai.usage.input_tokens", 12)
    llm.set_attribute("gen_ai.usage.output_tokens", 3)
    llm.set_attribute("gen_ai.input.messages", '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]')
    llm.add_event("gen_ai.choice", {"index": 0}, timestamp=T0 + 2_000)
    llm.end(end_time=T0 + 5_000_000)
    tool = tracer.start_span("execute_tool search", context=context, start_time=T0 + 6_000_000)
    tool.record_exception(ValueError("backend down"), timestamp=T0 + 6_500_000)
    tool.set_status(Status(StatusCode.ERROR))
    tool.end(end_time=T0 + 7_000_000)
    root.end(end_time=T0 + 8_000_000)
    provider.shutdown()


def _calls_of(upstream, project: str) -> dict[str, dict]:
    calls = {c["op_name"]: dict(c) for c in upstream.calls if c["project_id"] == project}
    for call in calls.values():
        del call["project_id"]
    return calls


def test_sdk_http_exporter_delivers_the_same_calls_as_grpc(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    _run_workload(GrpcExporter(endpoint=bridge.grpc_endpoint, insecure=True, headers=(("project_id", "t/grpc"),)))
    _run_workload(
        HttpExporter(
            endpoint=f"{bridge.http_url}/v1/traces", headers={"project_id": "t/http"}, compression=Compression.Gzip
        )
    )
    upstream.wait_for_calls(6)
    over_grpc, over_http = _calls_of(upstream, "t/grpc"), _calls_of(upstream, "t/http")
    assert set(over_http) == {"invoke_agent planner", "chat gpt-4o", "execute_tool search"}
    assert over_http == over_grpc  # every field, otel_dump included
    assert over_http["execute_tool search"]["exception"] == "ValueError: backend down"
    assert over_http["chat gpt-4o"]["parent_id"] == over_http["invoke_agent planner"]["id"]
    assert {r.path for r in upstream.requests} == {"/v2/t/grpc/calls/complete", "/v2/t/http/calls/complete"}


def _otlp_json(message) -> bytes:
    """Protobuf -> OTLP/JSON as exporters write it: lowerCamelCase, ids as hex (not protobuf's base64)."""
    doc = json_format.MessageToDict(message)
    for resource_spans in doc.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for s in scope_spans.get("spans", []):
                for item in (s, *s.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    return json.dumps(doc).encode()


def _post(bridge, body: bytes, content_type: str, headers: dict | None = None, path: str = "/v1/traces"):
    return httpx.post(
        bridge.http_url + path, content=body, headers={"Content-Type": content_type, **(headers or {})}, timeout=10
    )


def test_protobuf_json_and_grpc_requests_make_identical_calls(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    # The child first, as SDKs export them (children end first): the status roll-up then counts it in the
    # root's summary.status_counts on the first send as on the later ones.
    sent = request(
        span("child", {"output.value": "bye"}, span_id=b"\x0b" * 8, parent_span_id=b"\x0a" * 8,
             links=[(b"\x01" * 16, b"\x02" * 8, {"k": "v"})]),
        span("root", {"input.value": "hello", "llm.token_count.prompt": 5}, span_id=b"\x0a" * 8),
    )
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(sent, metadata=(("project_id", "t/grpc"),), timeout=10)
    assert _post(bridge, sent.SerializeToString(), PROTOBUF, {"project_id": "t/protobuf"}).status_code == 200
    assert _post(bridge, _otlp_json(sent), JSON, {"project_id": "t/json"}).status_code == 200
    upstream.wait_for_calls(6)
    over_grpc = _calls_of(upstream, "t/grpc")
    assert set(over_grpc) == {"root", "child"}
    assert _calls_of(upstream, "t/protobuf") == over_grpc
    assert _calls_of(upstream, "t/json") == over_grpc
    assert over_grpc["child"]["parent_id"] == "0a" * 8


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_compressed_bodies(upstream, start_bridge, encoding, content_type):
    bridge = start_bridge(bridge_settings(upstream))
    sent = request(span("compressed"), resource=ROUTED)
    raw = sent.SerializeToString() if content_type == PROTOBUF else _otlp_json(sent)
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    answer = _post(bridge, body, content_type, {"Content-Encoding": encoding})
    assert answer.status_code == 200, answer.text
    assert upstream.wait_for_calls(1)[0]["op_name"] == "compressed"


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON + "; charset=utf-8"])
def test_partial_success_is_answered_in_the_request_encoding(upstream, start_bridge, content_type):
    bridge = start_bridge(bridge_settings(upstream))
    sent = request(span("no project"), span("neither", span_id=b"\x03" * 8))
    raw = sent.SerializeToString() if content_type == PROTOBUF else _otlp_json(sent)
    answer = _post(bridge, raw, content_type)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == content_type.split(";")[0]
    if content_type == PROTOBUF:
        partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
        rejected, message = partial.rejected_spans, partial.error_message
    else:
        partial = answer.json()["partialSuccess"]
        rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
    assert rejected == 2
    assert "wandb.entity + wandb.project" in message and "header project_id" in message


def test_full_success_leaves_partial_success_unset(start_bridge):
    bridge = start_bridge(bridge_settings())
    answer = _post(bridge, _otlp_json(request(span("ok"), resource=ROUTED)), JSON)
    assert (answer.status_code, answer.json()) == (200, {})
    answer = _post(bridge, b"", PROTOBUF)  # an empty request is a success too
    assert (answer.status_code, answer.content) == (200, b"")


_JUNK = b"\x0a\xff\xff\xff\xff\x0f"  # a field with a length far past the end
BAD_REQUESTS = [
    # name, path, method, content_type, headers, body, status, body_says
    ("get", "/v1/traces", "GET", None, {}, b"", 405, "405 method not allowed, supported: [POST]"),
    ("put", "/v1/traces", "PUT", PROTOBUF, {}, b"", 405, "supported: [POST]"),
    ("other signal", "/v1/metrics", "POST", PROTOBUF, {}, b"", 404, "Not Found"),
    (
        "text content type", "/v1/traces", "POST", "text/plain", {}, b"{}", 415,
        "415 unsupported media type, supported: [application/json, application/x-protobuf]",
    ),
    ("no content type", "/v1/traces", "POST", None, {}, b"{}", 415, "supported: [application/json, application/x-protobuf]"),
    ("brotli", "/v1/traces", "POST", JSON, {"Content-Encoding": "br"}, b"{}", 415, "supported: [gzip, deflate, identity]"),
    ("bad json", "/v1/traces", "POST", JSON, {}, b'{"resourceSpans": [', 400, "invalid JSON"),
    ("json not an object", "/v1/traces", "POST", JSON, {}, b"[1, 2]", 400, "expected a JSON object"),
    ("json wrong shape", "/v1/traces", "POST", JSON, {}, b'{"resourceSpans": {"a": 1}}', 400, "not an OTLP/JSON trace request"),
    (
        "json id not hex", "/v1/traces", "POST", JSON, {},
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "zz"}]}]}]}', 400, "spanId 'zz' is not hex",
    ),
    ("bad protobuf", "/v1/traces", "POST", PROTOBUF, {}, _JUNK, 400, "not a protobuf ExportTraceServiceRequest"),
    ("bad gzip", "/v1/traces", "POST", PROTOBUF, {"Content-Encoding": "gzip"}, b"not gzip", 400, "does not decompress"),
    ("cut gzip", "/v1/traces", "POST", PROTOBUF, {"Content-Encoding": "gzip"}, gzip.compress(b"x" * 100)[:15], 400, "truncated"),
    ("too large", "/v1/traces", "POST", PROTOBUF, {}, b"\x00" * (1024 * 1024 + 1), 413, "over 1048576 bytes"),
    (
        "gzip bomb", "/v1/traces", "POST", PROTOBUF, {"Content-Encoding": "gzip"},
        gzip.compress(b"\x00" * (8 * 1024 * 1024)), 413, "decompressed body over 1048576 bytes",
    ),
]


@pytest.mark.parametrize(
    ("name", "path", "method", "content_type", "headers", "body", "status", "body_says"),
    BAD_REQUESTS,
    ids=[row[0] for row in BAD_REQUESTS],
)
def test_bad_requests_get_the_otlp_status(start_bridge, name, path, method, content_type, headers, body, status, body_says):
    bridge = start_bridge(bridge_settings(receiver={"http": {"max_request_body_size_mib": 1}}))
    if content_type:
        headers = {"Content-Type": content_type, **headers}
    answer = httpx.request(method, bridge.http_url + path, content=body, headers=headers, timeout=10)
    assert answer.status_code == status
    if content_type == PROTOBUF and status in (400, 413):  # OTLP: a google.rpc.Status in the request's encoding
        error = status_pb2.Status.FromString(answer.content)
        expected_code = code_pb2.INVALID_ARGUMENT if status == 400 else code_pb2.RESOURCE_EXHAUSTED
        assert error.code == expected_code and body_says in error.message
    elif content_type == JSON and status == 400:
        assert answer.json()["code"] == code_pb2.INVALID_ARGUMENT and body_says in answer.json()["message"]
    else:
        assert body_says in answer.text
    if status == 405:
        assert answer.headers["allow"] == "POST"
    # The receiver keeps serving after every refusal.
    assert _post(bridge, request(span("after"), resource=ROUTED).SerializeToString(), PROTOBUF).status_code == 200


def _metric(bridge, name: str, **labels: str) -> float:
    page = httpx.get(bridge.telemetry_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_refusals_and_acceptances_move_the_metrics(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, receiver={"http": {"max_request_body_size_mib": 1}}))
    _post(bridge, b"{", JSON)
    _post(bridge, b"{}", "text/plain")
    _post(bridge, b"\x00" * (2 * 1024 * 1024), PROTOBUF)
    _post(bridge, request(span("a"), span("b", span_id=b"\x01" * 8), resource=ROUTED).SerializeToString(), PROTOBUF)
    _post(bridge, request(span("lost")).SerializeToString(), PROTOBUF)
    upstream.wait_for_calls(2)
    refused = "otelbridge_receiver_refused_requests_total"
    assert _metric(bridge, refused, transport="http", reason="bad_request") == 1
    assert _metric(bridge, refused, transport="http", reason="unsupported_media_type") == 1
    assert _metric(bridge, refused, transport="http", reason="too_large") == 1
    assert _metric(bridge, "otelbridge_receiver_accepted_spans_total", transport="http") == 2
    assert _metric(bridge, "otelbridge_receiver_refused_spans_total", transport="http", reason="invalid") == 1
    assert _metric(bridge, "otelbridge_receiver_request_duration_seconds_count", transport="http") == 5
    assert _metric(bridge, "otelbridge_exporter_sent_calls_total") == 2


def test_full_queue_answers_503_with_retry_after(upstream, start_bridge):
    # With the upstream down the queue fills; then a request is refused whole, to be retried later.
    bridge = start_bridge(bridge_settings(upstream, exporter={"queue": {"max_bytes": 30_000, "max_project_share": 1}, "batch": {"max_bytes": 20_000}}))
    upstream.set_down(True)
    answers = []
    for n in range(20):
        req = request(span(f"s{n}", {"input.value": "x" * 2000}, span_id=(n + 1).to_bytes(8, "big")), resource=ROUTED)
        answers.append(_post(bridge, req.SerializeToString(), PROTOBUF))
        if answers[-1].status_code != 200:
            break
    answer = answers[-1]
    assert answer.status_code == 503, "the queue never filled"
    assert answer.headers["retry-after"] == "1"
    error = status_pb2.Status.FromString(answer.content)
    assert error.code == code_pb2.UNAVAILABLE and "exporter.queue.max_bytes" in error.message
    answer = _post(bridge, _otlp_json(req), JSON)
    assert (answer.status_code, answer.json()["code"]) == (503, code_pb2.UNAVAILABLE)
    assert _metric(bridge, "otelbridge_receiver_refused_spans_total", transport="http", reason="queue_full") == 2
    upstream.set_down(False)
    assert len(upstream.wait_for_calls(len(answers) - 1)) == len(answers) - 1


def test_request_larger_than_the_whole_queue_answers_413(upstream, start_bridge):
    # A queue of 2000 bytes can never take one call of 5000: refused for good, no Retry-After.
    bridge = start_bridge(bridge_settings(upstream, exporter={"queue": {"max_bytes": 2000, "max_project_share": 1}, "batch": {"max_bytes": 2000}}))
    big = request(span("big", {"input.value": "x" * 5000}), resource=ROUTED)
    answer = _post(bridge, big.SerializeToString(), PROTOBUF)
    assert answer.status_code == 413 and "retry-after" not in answer.headers
    error = status_pb2.Status.FromString(answer.content)
    assert error.code == code_pb2.RESOURCE_EXHAUSTED and "exporter.queue.max_bytes" in error.message
    assert _metric(bridge, "otelbridge_receiver_refused_spans_total", transport="http", reason="too_large") == 1
    assert _post(bridge, request(span("small"), resource=ROUTED).SerializeToString(), PROTOBUF).status_code == 200
    assert [c["op_name"] for c in upstream.wait_for_calls(1)] == ["small"]



def test_project_header_routes_like_grpc_metadata(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, exporter={"weave": {"project": "team/fallback"}}))
    _post(bridge, request(span("one")).SerializeToString(), PROTOBUF, {"project_id": "team/from-header"})
    _post(bridge, request(span("two", span_id=b"\x05" * 8)).SerializeToString(), PROTOBUF)
    upstream.wait_for_calls(2)
    assert {c["op_name"]: c["project_id"] for c in upstream.calls} == {"one": "team/from-header", "two": "team/fallback"}


def test_http_receiver_can_be_disabled(start_bridge):
    bridge = start_bridge(bridge_settings(receiver={"http": None}))
    assert bridge.bridge.http is None and bridge.bridge.grpc is not None


def test_decompression_stops_at_the_limit_instead_of_inflating_the_bomb():
    # 64 MiB of zeros compress to 64 KiB; inflating them whole would take 64 MiB before the size check.
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024))
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError):
            inflate(bomb, 16 + zlib.MAX_WBITS, 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
