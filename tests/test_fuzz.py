"""Property-based fuzzing: arbitrary OTLP requests through the mapping, arbitrary bytes through Export.

CI runs a bounded, derandomized number of examples (the same every run). bench/fuzz.py runs the same
properties with many more random examples: OTEL_BRIDGE_FUZZ_EXAMPLES=N switches this module to that.
"""

from __future__ import annotations

import json
import os
import time

import grpc
import orjson
from conftest import bridge_settings
from fuzz_strategies import REQUEST, SPAN, TEXT, mutations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from spans import request, span
from test_hostile import EXPORT, SECRET_PART, SECRETS
from test_mapping import assert_valid_calls

from otel_bridge.decode.limits import DEFAULT_LIMITS
from otel_bridge.mapping import DEFAULT_RULES
from otel_bridge.pipeline import map_request
from otel_bridge.decode.redact import DEFAULT_REDACTION

LONG_RUN_EXAMPLES = int(os.environ.get("OTEL_BRIDGE_FUZZ_EXAMPLES", "0"))


def fuzz_settings(ci_examples: int) -> settings:
    return settings(
        max_examples=LONG_RUN_EXAMPLES or ci_examples,
        derandomize=not LONG_RUN_EXAMPLES,  # CI: the same examples every run; bench/fuzz.py: new ones
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )


def _map(data: bytes, default_project: str = "fuzz/default"):
    return map_request(
        data,
        header_project=None,
        default_project=default_project,
        rules=DEFAULT_RULES,
        limits=DEFAULT_LIMITS,
        redaction=DEFAULT_REDACTION,
    )


@fuzz_settings(300)
@given(REQUEST, st.sampled_from(["fuzz/default", ""]))
def test_mapping_never_raises_and_yields_valid_calls_or_clean_rejections(req, default_project):
    data = req.SerializeToString()
    result = _map(data, default_project)
    spans = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    assert result.spans == spans
    assert result.accepted + result.rejected == spans
    assert sum(len(calls) for calls in result.calls.values()) == result.accepted
    for reason in result.reasons:
        assert "internal error" not in reason, reason
    for project, calls in result.calls.items():
        decoded = [orjson.loads(c) for c in calls]
        assert all(call["project_id"] == project for call in decoded)
        assert_valid_calls(decoded)
    # Deterministic: the same bytes map to the same bytes (a retried request dedups upstream).
    again = _map(data, default_project)
    assert again.calls == result.calls
    assert again.reasons == result.reasons
    assert again.error_message() == result.error_message()


@fuzz_settings(150)
@given(SPAN, st.sampled_from(sorted(SECRETS)), TEXT, TEXT, st.sampled_from(["attribute", "json", "name", "status", "event", "resource"]))
def test_no_default_secret_survives_wherever_it_is(sp, rule, before, after, where):
    secret = SECRETS[rule]
    text = f"{before} {secret} {after}"
    sp.trace_id, sp.span_id, sp.parent_span_id = b"\x01" * 16, b"\x02" * 8, b""
    sp.start_time_unix_nano, sp.end_time_unix_nano = 1_767_225_600 * 10**9, 1_767_225_601 * 10**9
    resource = {"wandb.entity": "e", "wandb.project": "p"}
    if where == "attribute":
        sp.attributes.add(key="input.value").value.string_value = text
    elif where == "json":
        sp.attributes.add(key="gen_ai.input.messages").value.string_value = json.dumps([{"content": text}])
    elif where == "name":
        sp.name = text
    elif where == "status":
        sp.status.code, sp.status.message = 2, text
    elif where == "event":
        sp.events.add(name="exception").attributes.add(key="exception.message").value.string_value = text
    else:
        resource["service.owner"] = text
    result = _map(request(sp, resource=resource).SerializeToString())
    out = b"".join(c for calls in result.calls.values() for c in calls) + result.error_message().encode()
    assert SECRET_PART.get(rule, secret).encode() not in out
    assert result.rejected == 0


_SEED_REQUEST = request(
    span("seed", {"gen_ai.usage.input_tokens": 5, "input.value": '[{"role": "user", "content": "hi"}]'}, events=[("e", {"k": 1})]),
    resource={"wandb.entity": "e", "wandb.project": "p"},
).SerializeToString()


def test_export_answers_every_byte_string_with_ok_or_invalid_argument(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    statuses: dict[str, int] = {}

    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        export = channel.unary_unary(EXPORT, request_serializer=lambda b: b, response_deserializer=ExportTraceServiceResponse.FromString)

        @fuzz_settings(300)
        @given(st.one_of(st.binary(max_size=512), mutations(_SEED_REQUEST), REQUEST.map(lambda r: r.SerializeToString())))
        def export_bytes(data):
            try:
                export(data, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, exc.details())
                assert "is not a protobuf ExportTraceServiceRequest" in exc.details()
            statuses[code.name] = statuses.get(code.name, 0) + 1

        export_bytes()
        # Both outcomes were exercised, and the server still serves.
        assert statuses.get("OK") and statuses.get("INVALID_ARGUMENT"), statuses
        answer = export(request(span("after"), resource={"wandb.entity": "e", "wandb.project": "after"}).SerializeToString(), timeout=10)
    assert answer.partial_success.rejected_spans == 0
    deadline = time.monotonic() + 10
    while not any(r.project == "e/after" for r in upstream.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(r.project == "e/after" for r in upstream.requests)
