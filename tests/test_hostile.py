"""Hostile and broken input, through real gRPC requests to a real bridge and a validating upstream:
each limit, each rejection reason, each built-in redaction rule, and garbage bytes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import grpc
import pytest
from conftest import bridge_settings
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from spans import request, span

from otel_bridge.config import Redact, Settings, load_settings
from otel_bridge.errors import ConfigError
from otel_bridge.decode.redact import DEFAULT_KEYS, DEFAULT_VALUE_RULES

PROJECT = {"wandb.entity": "e", "wandb.project": "p"}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _export(bridge, req):
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        return trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=10)


def _export_bytes(bridge, data: bytes):
    """An Export call carrying exactly these bytes, whatever they are."""
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        call = channel.unary_unary(
            EXPORT, request_serializer=lambda b: b, response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString
        )
        return call(data, timeout=10)


def _metric(bridge, name: str, **labels) -> float:
    value = bridge.bridge.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def _delivered_text(upstream) -> str:
    return "\n".join(json.dumps(r.body) for r in upstream.requests)


# --- limits -----------------------------------------------------------------------------------------------


def _deep(levels: int) -> AnyValue:
    value = AnyValue(string_value="bottom")
    for _ in range(levels):
        value = AnyValue(array_value=ArrayValue(values=[value]))
    return value


def test_value_over_the_length_limit_is_cut_marked_counted_and_kept(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, mapping={"limits": {"max_attribute_value_length": 100}}))
    answer = _export(bridge, request(span("s", {"input.value": "a" * 250, "blob": b"\x01" * 150, "ok": "b" * 100}), resource=PROJECT))
    assert answer.partial_success.rejected_spans == 0
    assert answer.partial_success.error_message == (
        "limits hit, spans kept: 2 values cut to 100 characters or bytes (mapping.limits.max_attribute_value_length)"
    )
    call = upstream.wait_for_calls(1)[0]
    assert call["inputs"]["input.value"] == "a" * 100 + "...[truncated: 250 chars]"
    assert call["otel_dump"]["attributes"]["blob"].endswith("...[truncated: 150 bytes]")
    assert call["otel_dump"]["attributes"]["ok"] == "b" * 100  # at the limit: untouched
    assert _metric(bridge, "otelbridge_mapping_limit_hits_total", limit="max_attribute_value_length") == 2


def test_names_and_status_messages_are_held_to_the_length_limit(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, mapping={"limits": {"max_attribute_value_length": 50}}))
    _export(bridge, request(span("n" * 300, status_code=2, status_message="m" * 300), resource=PROJECT))
    call = upstream.wait_for_calls(1)[0]
    assert call["otel_dump"]["name"] == "n" * 50 + "...[truncated: 300 chars]"
    assert call["otel_dump"]["status"]["message"] == "m" * 50 + "...[truncated: 300 chars]"
    assert call["exception"] == "m" * 50 + "...[truncated: 300 chars]"


def test_attributes_over_the_count_are_dropped_and_counted(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, mapping={"limits": {"max_attributes": 3}}))
    sp = span("s", {f"k{i}": i for i in range(5)}, events=[("e", {f"a{i}": i for i in range(4)})])
    sp.dropped_attributes_count = 2
    answer = _export(bridge, request(sp, resource={**PROJECT, "r1": 1, "r2": 2}))
    assert answer.partial_success.error_message == (
        "limits hit, spans kept: 4 attributes dropped over 3 per list (mapping.limits.max_attributes)"
    )
    dump = upstream.wait_for_calls(1)[0]["otel_dump"]
    assert dump["attributes"] == {"k0": 0, "k1": 1, "k2": 2}
    assert dump["dropped_attributes_count"] == 4  # 2 the SDK dropped + 2 the bridge dropped
    assert dump["events"][0]["attributes"] == {"a0": 0, "a1": 1, "a2": 2}
    assert dump["events"][0]["dropped_attributes_count"] == 1
    assert dump["resource"]["dropped_attributes_count"] == 1
    assert _metric(bridge, "otelbridge_mapping_limit_hits_total", limit="max_attributes") == 4  # 2 + 1 + 1


@pytest.mark.parametrize("kind", ["events", "links"])
def test_events_and_links_over_the_count_are_dropped_and_counted(upstream, start_bridge, kind):
    bridge = start_bridge(bridge_settings(upstream, mapping={"limits": {f"max_{kind}": 2}}))
    if kind == "events":
        sp = span("s", events=[(f"e{i}", {}) for i in range(5)])
    else:
        sp = span("s", links=[(bytes([i + 1]) * 16, bytes([i + 1]) * 8, {}) for i in range(5)])
    answer = _export(bridge, request(sp, resource=PROJECT))
    noun = "event" if kind == "events" else "link"
    assert answer.partial_success.error_message == (
        f"limits hit, spans kept: 3 {kind} dropped over 2 per span (mapping.limits.max_{kind})"
    )
    dump = upstream.wait_for_calls(1)[0]["otel_dump"]
    assert len(dump[kind]) == 2
    assert dump[f"dropped_{kind}_count"] == 3
    assert _metric(bridge, "otelbridge_mapping_limit_hits_total", limit=f"max_{kind}") == 3
    assert noun in answer.partial_success.error_message


def test_nesting_over_the_depth_limit_is_kept_as_sent_or_cut(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, mapping={"limits": {"max_depth": 4}}))
    sp = span("s", {"json": "[[[[[[1]]]]]]", "a.b.c.d.e.f": "dotted", "shallow": "[[1]]", "a.b": "[[1]]"})
    sp.attributes.append(KeyValue(key="nested", value=_deep(10)))
    answer = _export(bridge, request(sp, resource=PROJECT))
    assert answer.partial_success.rejected_spans == 0
    assert answer.partial_success.error_message == (
        "limits hit, spans kept: 3 values nested deeper than 4 levels kept as sent or cut (mapping.limits.max_depth)"
    )
    attributes = upstream.wait_for_calls(1)[0]["otel_dump"]["attributes"]
    assert attributes["json"] == "[[[[[[1]]]]]]"  # JSON text nested too deep stays the text it was sent as
    assert attributes["a.b.c.d.e.f"] == "dotted"  # a key of more parts than the limit is kept whole
    assert attributes["a"]["b"] == [[1]]  # 2 key parts + 2 arrays: the leaves at level 4, within the limit
    marker = "[truncated: nested deeper than 4 levels]"
    assert attributes["nested"] == [[[marker]]]  # the key is level 1, then three arrays
    assert attributes["shallow"] == [[1]]
    assert _metric(bridge, "otelbridge_mapping_limit_hits_total", limit="max_depth") == 3


def test_deeply_nested_json_and_long_dotted_keys_keep_the_span(upstream, start_bridge):
    """Past the JSON encoder's own limit (255 levels) with the default max_depth: cut, not rejected."""
    bridge = start_bridge(bridge_settings(upstream))
    sp = span("s", {"json": "[" * 600 + "]" * 600, ".".join(["k"] * 2000): 1, ".".join(["0"] * 2000): 2})
    answer = _export(bridge, request(sp, resource=PROJECT))
    assert answer.partial_success.rejected_spans == 0, answer.partial_success.error_message
    assert "mapping.limits.max_depth" in answer.partial_success.error_message
    upstream.wait_for_calls(1)


# --- non-UTF-8 and odd numbers -------------------------------------------------------------------------------


def test_bytes_nan_inf_and_int64_extremes_do_not_break_the_batch(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    odd = {
        "blob": b"\xff\xfe\x00binary",
        "nan": float("nan"),
        "inf": float("inf"),
        "minus_inf": float("-inf"),
        "max": 2**63 - 1,
        "min": -(2**63),
        "beyond_js": 2**53 + 1,
        "gen_ai.usage.input_tokens": 2**63 - 1,
        "gen_ai.usage.output_tokens": 2**63 - 1,  # their sum does not fit in 64 bits: no total, no failure
    }
    answer = _export(bridge, request(span("odd", odd), span("plain", span_id=b"\x03" * 8), resource=PROJECT))
    assert answer.partial_success.rejected_spans == 0
    calls = {c["op_name"]: c for c in upstream.wait_for_calls(2)}
    attributes = calls["odd"]["otel_dump"]["attributes"]
    assert attributes["blob"] == base64.b64encode(b"\xff\xfe\x00binary").decode()
    assert (attributes["nan"], attributes["inf"], attributes["minus_inf"]) == ("nan", "inf", "-inf")
    # The upstream stand-in decodes with Python's json, whose integers are exact: no float on the way.
    assert attributes["max"] == 2**63 - 1 and attributes["min"] == -(2**63) and attributes["beyond_js"] == 2**53 + 1
    assert "total_tokens" not in calls["odd"]["summary"]["usage"]["usage"]


# --- rejections ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": b"\x01" * 8}, "invalid trace_id '0101010101010101': 8 bytes, must be 16"),
        ({"trace_id": b"\x00" * 16}, "invalid trace_id: all zeros"),
        ({"span_id": b"\x01" * 4}, "invalid span_id '01010101': 4 bytes, must be 8"),
        ({"span_id": b"\x00" * 8}, "invalid span_id: all zeros"),
        ({"parent_span_id": b"\x01" * 4}, "invalid parent_span_id '01010101': 4 bytes, must be empty or 8"),
        ({"parent_span_id": b"\x00" * 16}, "invalid parent_span_id '00000000000000000000000000000000': 16 bytes"),
        ({"start": 0}, "start_time_unix_nano is missing (0)"),
        ({"end": 0}, "end_time_unix_nano is missing (0): only finished spans can become calls"),
    ],
)
def test_each_invalid_span_is_rejected_with_its_reason_and_the_rest_delivered(upstream, start_bridge, fields, reason):
    bridge = start_bridge(bridge_settings(upstream))
    bad = span("bad", **{"span_id": b"\x09" * 8, **fields})
    answer = _export(bridge, request(span("good"), bad, span("good too", span_id=b"\x07" * 8), resource=PROJECT))
    assert answer.partial_success.rejected_spans == 1
    assert reason in answer.partial_success.error_message
    upstream.wait_for_calls(2)
    assert sorted(c["op_name"] for c in upstream.calls) == ["good", "good too"]
    assert _metric(bridge, "otelbridge_receiver_refused_spans_total", transport="grpc", reason="invalid") == 1


@pytest.mark.parametrize("project", ["bad\x19name", "with space", "q?uery", "frag#ment", "per%cent", "co:lon", "back\\slash"])
def test_project_names_that_would_break_the_upstream_url_are_rejected(upstream, start_bridge, project):
    bridge = start_bridge(bridge_settings(upstream))
    answer = _export(
        bridge,
        trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[
                request(span("bad"), resource={"wandb.entity": "e", "wandb.project": project}).resource_spans[0],
                request(span("good"), resource=PROJECT).resource_spans[0],
            ]
        ),
    )
    assert answer.partial_success.rejected_spans == 1
    assert "names without whitespace, control characters or / \\ # ? % :, and not . or .." in answer.partial_success.error_message
    assert [c["op_name"] for c in upstream.wait_for_calls(1)] == ["good"]


@pytest.mark.parametrize(
    "resource, header",
    [
        ({"wandb.entity": "..", "wandb.project": "p"}, None),  # was POST /v2/../p -> /p/calls/complete
        ({"wandb.project": "../x"}, None),  # was POST /v2/../x -> /x/calls/complete
        ({"wandb.entity": "e", "wandb.project": "."}, None),
        ({"service.name": "no project attributes"}, "../.."),  # was POST /calls/complete
        ({"service.name": "no project attributes"}, "admin/.."),
    ],
)
def test_dot_segments_in_project_names_never_reach_the_upstream_url(upstream, start_bridge, resource, header):
    bridge = start_bridge(bridge_settings(upstream))
    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            request(span("bad"), resource=resource).resource_spans[0],
            request(span("good"), resource=PROJECT).resource_spans[0],
        ]
    )
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        answer = stub.Export(req, timeout=10, metadata=(("project_id", header),) if header else ())
    assert answer.partial_success.rejected_spans == 1
    assert "and not . or .." in answer.partial_success.error_message
    assert [c["op_name"] for c in upstream.wait_for_calls(1)] == ["good"]
    assert [a.path for a in upstream.attempts] == ["/v2/e/p/calls/complete"]


def test_the_upstream_url_is_built_from_checked_segments():
    from otel_bridge.project import project_path

    assert project_path("team-1/my.project_2") == "team-1/my.project_2"
    for bad in ("../x", "e/..", "./p", "e/p/q", "e/p?x", "e/%2e%2e"):
        with pytest.raises(ValueError, match="not of the form"):
            project_path(bad)


def test_a_megabyte_id_gives_a_short_reason(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    answer = _export(bridge, request(span("huge id", span_id=b"\x01" * 1_000_000), resource=PROJECT))
    assert answer.partial_success.rejected_spans == 1
    assert len(answer.partial_success.error_message) < 400
    assert "(1000000 bytes)" in answer.partial_success.error_message


# --- garbage --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"\xff\xff\xff\xff", "Wire format was corrupt"),
        (b'{"resourceSpans": []}', "Wire format was corrupt"),
        (request(span("s"), resource=PROJECT).SerializeToString()[:-7], "Wire format was corrupt"),
        (request(span("s", {"a": "héllo"})).SerializeToString().replace("héllo".encode(), b"h\xff\xfello"), "bad UTF-8"),
    ],
    ids=["garbage", "json-on-grpc", "truncated", "bad-utf8"],
)
def test_garbage_is_invalid_argument_and_the_server_keeps_serving(upstream, start_bridge, data, detail):
    bridge = start_bridge(bridge_settings(upstream))
    with pytest.raises(grpc.RpcError) as refused:
        _export_bytes(bridge, data)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a protobuf ExportTraceServiceRequest" in refused.value.details()
    assert detail in refused.value.details()
    assert _metric(bridge, "otelbridge_receiver_refused_requests_total", transport="grpc", reason="bad_request") == 1
    answer = _export_bytes(bridge, request(span("after"), resource=PROJECT).SerializeToString())
    assert answer.partial_success.rejected_spans == 0
    assert upstream.wait_for_calls(1)[0]["op_name"] == "after"


def test_empty_request_is_fine(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    answer = _export_bytes(bridge, b"")
    assert answer.partial_success.rejected_spans == 0 and answer.partial_success.error_message == ""


# --- redaction ------------------------------------------------------------------------------------------------

# One real-looking secret per built-in rule (made up), and what stays around it.
SECRETS = {
    "api_key": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "google_api_key": "AIzaSyD3Xm9Qk2Lp8Vn4Rt6Wy1Zb5Cf7Hj0Ks2M",
    "github_token": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "slack_token": "xoxb-1234567890-0987654321-AbCdEfGh",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "bearer_token": "Bearer 0a1b2c3d4e5f6a7b8c9d0e1f",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    "url_credentials": "postgres://admin:hunter2secret@db.internal:5432/app",
    "email": "jane.doe+trips@example.co.uk",
    "url_query_secret": "https://db.example.com/q?user=jo&password=hunter2secret",
    "stripe_key": "sk_live_51HxYzAbCdEfGhIjKlMnOpQr",
    "huggingface_token": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz12345678",
    "wandb_api_key": "WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567",
}
REDACTED_FORM = {
    "bearer_token": "Bearer [REDACTED]",
    "url_credentials": "postgres://[REDACTED]@db.internal:5432/app",
    "url_query_secret": "https://db.example.com/q?user=jo&password=[REDACTED]",
    "wandb_api_key": "WANDB_API_KEY=[REDACTED]",
}
SECRET_PART = {
    "bearer_token": "0a1b2c3d4e5f6a7b8c9d0e1f",
    "url_credentials": "hunter2secret",
    "url_query_secret": "hunter2secret",
    "wandb_api_key": "0123456789abcdef0123456789abcdef01234567",
}


def test_every_built_in_rule_has_a_secret_here():
    assert set(SECRETS) == {rule.name for rule in DEFAULT_VALUE_RULES}


def _secret_everywhere(secret: str):
    """A span carrying the secret in every kind of place a string can be."""
    return span(
        f"call with {secret}",
        {
            "input.value": f"my key is {secret}, keep it",
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": f"line one\n{secret}\nline three"}]),
            "tool.args": {"nested": [f"{secret}"]},
        },
        status_code=2,
        status_message=f"failed with {secret}",
        events=[("exception", {"exception.type": "Boom", "exception.message": f"saw {secret}"})],
        links=[(b"\x05" * 16, b"\x05" * 8, {"note": secret})],
    )


@pytest.mark.parametrize("rule", sorted(SECRETS))
def test_each_built_in_rule_redacts_everywhere_before_anything_is_sent(upstream, start_bridge, rule):
    bridge = start_bridge(bridge_settings(upstream))
    secret = SECRETS[rule]
    answer = _export(bridge, request(_secret_everywhere(secret), resource={**PROJECT, "service.owner": secret}))
    assert answer.partial_success.rejected_spans == 0
    call = upstream.wait_for_calls(1)[0]
    sent = _delivered_text(upstream)
    assert SECRET_PART.get(rule, secret) not in sent
    assert json.dumps(secret)[1:-1] not in sent  # nor its JSON-escaped form
    replaced = REDACTED_FORM.get(rule, "[REDACTED]")
    assert call["inputs"]["input.value"] == f"my key is {replaced}, keep it"
    assert call["output"]["gen_ai.output.messages"][0]["content"] == f"line one\n{replaced}\nline three"
    assert call["otel_dump"]["attributes"]["tool"]["args"] == {"nested": [replaced]}
    assert call["otel_dump"]["status"]["message"] == f"failed with {replaced}"
    assert call["exception"] == f"failed with {replaced}"
    assert call["otel_dump"]["events"][0]["attributes"]["exception"]["message"] == f"saw {replaced}"
    assert call["otel_dump"]["links"][0]["attributes"]["note"] == replaced
    assert call["otel_dump"]["resource"]["attributes"]["service"]["owner"] == replaced
    assert call["op_name"] == f"call with {replaced}"
    assert _metric(bridge, "otelbridge_mapping_redactions_total", kind="value") >= 8


def test_a_json_string_value_is_redacted_after_its_escapes_are_decoded(upstream, start_bridge):
    """MLflow sends values as JSON text; "\\u0073k-..." is "sk-..." once decoded."""
    bridge = start_bridge(bridge_settings(upstream))
    escaped = '"\\u0073k-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"'
    _export(bridge, request(span("s", {"mlflow.spanInputs": escaped}), resource=PROJECT))
    call = upstream.wait_for_calls(1)[0]
    assert call["otel_dump"]["attributes"]["mlflow"]["spanInputs"] == "[REDACTED]"
    assert "Ab3dEf6hIj9kLm2nOp5qRs8t" not in _delivered_text(upstream)


def test_exception_from_an_exception_event_is_redacted(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    secret = SECRETS["api_key"]
    sp = span("s", status_code=2, events=[("exception", {"exception.type": "AuthError", "exception.message": f"bad key {secret}"})])
    _export(bridge, request(sp, resource=PROJECT))
    assert upstream.wait_for_calls(1)[0]["exception"] == "AuthError: bad key [REDACTED]"


@pytest.mark.parametrize("key", ["db.password", "http.request.header.authorization", "openai.api_key", "aws.Secret_Access_Key", "http.request.header.cookie"])
def test_built_in_keys_are_dropped_everywhere(upstream, start_bridge, key):
    bridge = start_bridge(bridge_settings(upstream))
    sp = span("s", {key: "opaque-value-42", "keep": "this"}, events=[("e", {key: "opaque-value-42"})])
    _export(bridge, request(sp, resource={**PROJECT, key: "opaque-value-42"}))
    call = upstream.wait_for_calls(1)[0]
    assert "opaque-value-42" not in _delivered_text(upstream)
    assert call["otel_dump"]["attributes"]["keep"] == "this"
    assert _metric(bridge, "otelbridge_mapping_redactions_total", kind="attribute") == 3


def test_usage_tokens_are_not_secrets(upstream, start_bridge):
    """`*token*` is deliberately not a built-in key: token counts must survive."""
    bridge = start_bridge(bridge_settings(upstream))
    _export(bridge, request(span("s", {"gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 4}), resource=PROJECT))
    assert upstream.wait_for_calls(1)[0]["summary"]["usage"]["usage"]["total_tokens"] == 7


def test_custom_keys_and_patterns_and_nested_maps(upstream, start_bridge):
    redact = {"keys": ["internal.*", "*.ssn"], "patterns": [r"ACME-\d{6}"]}
    bridge = start_bridge(bridge_settings(upstream, mapping={"redact": redact}))
    sp = span("s", {"internal.note": "x1", "user": {"name": "n", "ssn": "123-45-6789"}, "ticket": "see ACME-123456 now"})
    _export(bridge, request(sp, resource=PROJECT))
    attributes = upstream.wait_for_calls(1)[0]["otel_dump"]["attributes"]
    assert "internal" not in attributes
    assert attributes["user"] == {"name": "n"}
    assert attributes["ticket"] == "see [REDACTED] now"


def test_default_rules_can_be_turned_off(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, mapping={"redact": {"default_rules": False}}))
    secret = SECRETS["api_key"]
    _export(bridge, request(span("s", {"input.value": secret, "db.password": "pw"}), resource=PROJECT))
    call = upstream.wait_for_calls(1)[0]
    assert call["inputs"]["input.value"] == secret
    assert call["otel_dump"]["attributes"]["db"]["password"] == "pw"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("risk-assessment-framework-overview", None),  # sk- needs a digit
        ("task-550e8400e29b41d4a716446655440000", None),  # sk- must start a word
        ("the bearer of news", None),
        ("AKIAIOSFODNN7EXAMPLEXTRA", None),  # too long for an access key id
        ("a @ sign, and user@localhost", None),  # no domain with a dot
        ('{"k": "x\\nsk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t"}', '{"k": "x\\n[REDACTED]"}'),  # after a JSON escape
        ('{"k": "\\u00e9jane@example.com"}', '{"k": "\\u00e9[REDACTED]"}'),
    ],
)
def test_rule_edges(text, expected):
    from otel_bridge.decode.redact import DEFAULT_REDACTION

    assert DEFAULT_REDACTION.text(text) == (text if expected is None else expected)


def test_built_in_rules_are_documented():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for rule in DEFAULT_VALUE_RULES:
        assert f"| `{rule.name}` |" in readme
    for key in DEFAULT_KEYS:
        assert f"`{key}`" in readme


@pytest.mark.parametrize(
    ("redact", "message"),
    [
        ({"patterns": ["sk-(["]}, "`mapping.redact.patterns`: invalid regex 'sk-(['"),
        ({"patterns": ["a*"]}, "matches the empty string"),
        ({"keys": [" "]}, "`mapping.redact.keys`: an empty key matches nothing"),
        ({"default": True}, "`mapping.redact.default`: unknown key"),
    ],
)
def test_bad_redaction_config_names_the_key(tmp_path, redact, message):
    path = tmp_path / "bridge.yaml"
    path.write_text(json.dumps({"mapping": {"redact": redact}}))
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert message in str(raised.value)


def test_limit_bounds_name_the_key(tmp_path):
    path = tmp_path / "bridge.yaml"
    path.write_text(json.dumps({"mapping": {"limits": {"max_depth": 500, "max_attributes": 0}}}))
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert "`mapping.limits.max_depth` (500): Input should be less than or equal to 200" in str(raised.value)
    assert "`mapping.limits.max_attributes` (0): Input should be greater than 0" in str(raised.value)


def test_defaults_are_on():
    assert Settings().mapping.redact == Redact(default_rules=True, keys=[], patterns=[])


# --- the same over OTLP/HTTP --------------------------------------------------------------------------------


def _post(bridge, body: bytes, content_type: str = "application/x-protobuf"):
    import httpx

    return httpx.post(bridge.http_url + "/v1/traces", content=body, headers={"Content-Type": content_type}, timeout=10)


def test_http_garbage_is_400_with_the_reason_and_the_server_keeps_serving(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    truncated = request(span("s"), resource=PROJECT).SerializeToString()[:-7]
    answer = _post(bridge, truncated)
    assert answer.status_code == 400
    assert "is not a protobuf ExportTraceServiceRequest: Wire format was corrupt (truncated" in answer.text
    ok = _post(bridge, request(span("after"), resource=PROJECT).SerializeToString())
    assert ok.status_code == 200
    assert upstream.wait_for_calls(1)[0]["op_name"] == "after"


def test_http_limits_warn_and_redaction_applies(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, mapping={"limits": {"max_attribute_value_length": 16}}))
    secret = SECRETS["api_key"]
    body = request(span("s", {"input.value": f"key {secret}", "long": "x" * 20}), resource=PROJECT).SerializeToString()
    answer = _post(bridge, body)
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 0  # a warning
    assert "mapping.limits.max_attribute_value_length" in partial.error_message
    call = upstream.wait_for_calls(1)[0]
    assert call["inputs"]["input.value"] == "key [REDACTED]"
    assert call["otel_dump"]["attributes"]["long"] == "x" * 16 + "...[truncated: 20 chars]"
    assert secret not in _delivered_text(upstream)
