"""Redaction where secrets used to slip through (issue 12.15), and routing that reads names as sent
(issue 12.14): through a real bridge (gRPC, and the SDK's HTTP exporter) to the validating upstream, and on
the redaction itself, with the C decoder held to the reference on every case."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from conftest import bridge_settings
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from spans import request, span
from test_decode_native import assert_same

from otel_bridge.config import Redact
from otel_bridge.decode.limits import DEFAULT_LIMITS
from otel_bridge.decode.redact import DEFAULT_REDACTION, REDACTED, compile_redaction
from otel_bridge.decode.sanitize import Sanitizer

PROJECT = {"wandb.entity": "e", "wandb.project": "p"}
OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"


def _export(bridge, req):
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        return trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=10)


def _delivered(upstream) -> str:
    return "\n".join(json.dumps(r.body) for r in upstream.requests)


# --- 12.14: routing reads the names as sent ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "project"),
    [
        ("user@example.com", "p"),  # an e-mail address: the email rule matches it
        ("team", "jane.doe@example.co.uk"),
        ("team", OPENAI_KEY),  # a name shaped like an API key: still a name
    ],
)
def test_routing_uses_the_resource_names_as_sent(upstream, start_bridge, entity, project):
    bridge = start_bridge(bridge_settings(upstream))
    answer = _export(bridge, request(span("s"), resource={"wandb.entity": entity, "wandb.project": project}))
    assert answer.partial_success.rejected_spans == 0
    call = upstream.wait_for_calls(1)[0]
    assert call["project_id"] == f"{entity}/{project}"
    assert [r.project for r in upstream.requests] == [f"{entity}/{project}"]
    # Content is redacted still: the attribute's copy in otel_dump.
    resource_wandb = call["otel_dump"]["resource"]["attributes"]["wandb"]
    assert REDACTED in (resource_wandb["entity"], resource_wandb["project"])


def test_routing_attributes_dropped_by_a_key_rule_still_route(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, mapping={"redact": {"keys": ["wandb.*"]}}))
    _export(bridge, request(span("s"), resource={"wandb.entity": "e2", "wandb.project": "p2"}))
    call = upstream.wait_for_calls(1)[0]
    assert call["project_id"] == "e2/p2"
    assert "wandb" not in call["otel_dump"]["resource"]["attributes"]


def test_sdk_exporter_with_an_email_entity_reaches_that_entity(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    provider = TracerProvider(resource=Resource.create({"wandb.entity": "user@example.com", "wandb.project": "agents"}))
    provider.add_span_processor(SimpleSpanProcessor(HttpExporter(endpoint=f"{bridge.http_url}/v1/traces")))
    provider.get_tracer("tests").start_span("chat").end()
    provider.shutdown()
    call = upstream.wait_for_calls(1)[0]
    assert call["project_id"] == "user@example.com/agents"
    assert upstream.requests[0].path == "/v2/user%40example.com/agents/calls/complete"


# --- 12.15: what used to slip through, end to end -------------------------------------------------------------

# (span attributes, resource attributes, the secret text that must not be delivered)
MISSES = {
    "json_escaped_secret": (
        {"gen_ai.input.messages": '[{"role": "user", "content": "key \\u0073k' + OPENAI_KEY[2:] + '"}]'},
        {},
        OPENAI_KEY[8:],
    ),
    "json_escaped_url_credentials": ({"input.value": '{"dsn": "postgres:\\/\\/admin:hunter2secret@db\\/app"}'}, {}, "hunter2secret"),
    "password_key_in_json": ({"llm.invocation_parameters": '{"model": "m", "db": {"password": "opaque-pw-42"}}'}, {}, "opaque-pw-42"),
    "secret_attribute_key": ({OPENAI_KEY: "v"}, {}, OPENAI_KEY[8:]),
    "secret_map_key": ({"tool.args": {f"token {OPENAI_KEY}": 1}}, {}, OPENAI_KEY[8:]),
    "secret_resource_key": ({}, {f"owner {OPENAI_KEY}": "x"}, OPENAI_KEY[8:]),
    "lowercase_bearer": ({"note": "authorization: bearer 0a1b2c3d4e5f6a7b8c9d0e1f"}, {}, "0a1b2c3d4e5f6a7b8c9d0e1f"),
    "uppercase_api_key": ({"note": OPENAI_KEY.upper()}, {}, OPENAI_KEY.upper()[8:]),
    "wandb_key_in_env": ({"note": f"export WANDB_API_KEY={WANDB_KEY}"}, {}, WANDB_KEY),
    "wandb_key_basic_auth": ({"note": f"curl -u api:{WANDB_KEY} https://api.wandb.ai"}, {}, WANDB_KEY),
    "stripe_key": ({"note": "stripe sk_live_51HxYzAbCdEfGhIjKlMnOpQr"}, {}, "51HxYzAbCdEfGhIjKlMnOpQr"),
    "huggingface_token": ({"note": "HF hf_AbCdEfGhIjKlMnOpQrStUvWxYz12345678"}, {}, "AbCdEfGhIjKlMnOpQrStUvWxYz12345678"),
    "password_in_url_query": ({"url.full": "https://db.example.com/login?user=jo&password=hunter2secret&x=1"}, {}, "hunter2secret"),
    "secret_in_bytes": ({"payload": f"Authorization: Bearer {OPENAI_KEY}\x00\xff".encode("latin-1")}, {}, OPENAI_KEY[8:]),
}


def _everything_sent(upstream) -> str:
    """The delivered bodies, plus every base64 value in them decoded, so bytes values are searched too."""
    text = _delivered(upstream)
    decoded = []
    for call in upstream.calls:
        for value in call["otel_dump"]["attributes"].values():
            if isinstance(value, str):
                try:
                    decoded.append(base64.b64decode(value, validate=True).decode("latin-1"))
                except ValueError:
                    pass
    return "\n".join([text, *decoded])


@pytest.mark.parametrize("case", sorted(MISSES))
def test_each_former_miss_is_redacted_before_anything_is_sent(upstream, start_bridge, case):
    attributes, resource, secret = MISSES[case]
    bridge = start_bridge(bridge_settings(upstream))
    answer = _export(bridge, request(span("s", {**attributes, "keep": "this"}), resource={**PROJECT, **resource}))
    assert answer.partial_success.rejected_spans == 0
    call = upstream.wait_for_calls(1)[0]
    assert secret not in _everything_sent(upstream)
    assert call["otel_dump"]["attributes"]["keep"] == "this"


def test_json_text_is_kept_as_the_same_data_as_a_map(upstream, start_bridge):
    """The password key goes, the rest of the document stays; an escaped secret becomes [REDACTED] in place."""
    bridge = start_bridge(bridge_settings(upstream))
    messages = '[{"role": "user", "content": "use \\u0073k' + OPENAI_KEY[2:] + ' now"}]'
    params = '{"model": "m", "db": {"host": "h", "password": "opaque-pw-42"}}'
    _export(bridge, request(span("s", {"gen_ai.input.messages": messages, "llm.invocation_parameters": params}), resource=PROJECT))
    call = upstream.wait_for_calls(1)[0]
    assert call["inputs"]["gen_ai.input.messages"] == [{"role": "user", "content": f"use {REDACTED} now"}]
    assert call["otel_dump"]["attributes"]["llm"]["invocation_parameters"] == {"model": "m", "db": {"host": "h"}}
    metrics = bridge.bridge.metrics.registry
    assert metrics.get_sample_value("otelbridge_mapping_redactions_total", {"kind": "attribute"}) == 1
    assert metrics.get_sample_value("otelbridge_mapping_redactions_total", {"kind": "value"}) >= 1


def test_a_secret_in_bytes_is_replaced_in_the_bytes(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    payload = b"\x00\x01key=" + OPENAI_KEY.encode() + b"\xfe"
    _export(bridge, request(span("s", {"payload": payload, "plain": b"\x00\x01\x02"}), resource=PROJECT))
    attributes = upstream.wait_for_calls(1)[0]["otel_dump"]["attributes"]
    assert base64.b64decode(attributes["payload"]) == b"\x00\x01key=" + REDACTED.encode() + b"\xfe"
    assert base64.b64decode(attributes["plain"]) == b"\x00\x01\x02"


# --- the rules themselves -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("authorization: bearer 0a1b2c3d4e5f6a7b8c9d0e1f", f"authorization: bearer {REDACTED}"),
        ("AUTHORIZATION: BEARER 0a1b2c3d4e5f6a7b8c9d0e1f", f"AUTHORIZATION: BEARER {REDACTED}"),
        (f"key {OPENAI_KEY.upper()}", f"key {REDACTED}"),
        (f"WANDB_API_KEY={WANDB_KEY}", f"WANDB_API_KEY={REDACTED}"),
        (f'wandb_api_key: "{WANDB_KEY}"', f'wandb_api_key: "{REDACTED}"'),
        (f"https://api:{WANDB_KEY}@api.wandb.ai", f"https://{REDACTED}@api.wandb.ai"),
        (f"-u api:{WANDB_KEY}", f"-u api:{REDACTED}"),
        (f"api:{WANDB_KEY}0", None),  # 41 hex: not a W&B key
        ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", REDACTED),
        ("pk_live_4eC39HqLyjWDarjtT1zdp7dc", None),  # publishable: public by design
        ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz12345678", REDACTED),
        ("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", None),  # no digit: an identifier
        ("https://h/x?a=1&password=hunter2&b=2", f"https://h/x?a=1&password={REDACTED}&b=2"),
        ("https://h/x?ACCESS_TOKEN=abc123.", f"https://h/x?ACCESS_TOKEN={REDACTED}."),
        ("https://h/x?max_tokens=5", None),  # a name that does not end in token
        ("the bearer of news", None),
        ("a risk-assessment-framework-overview-2024", None),
    ],
)
def test_new_rule_edges(text, expected):
    assert DEFAULT_REDACTION.text(text) == (text if expected is None else expected)


@pytest.mark.parametrize("case", sorted(MISSES))
def test_redacting_twice_changes_nothing_more(case):
    """A value is matched as sent and again once decoded: a rule must leave its own [REDACTED] alone."""
    for value in [*MISSES[case][0].values(), *MISSES[case][0]]:
        if isinstance(value, str):
            once = DEFAULT_REDACTION.text(value)
            assert DEFAULT_REDACTION.text(once) == once


def test_json_content_drops_keys_and_redacts_decoded_strings():
    sanitizer = Sanitizer(DEFAULT_LIMITS, DEFAULT_REDACTION)
    value = {"user": {"Password": "x", "name": OPENAI_KEY}, OPENAI_KEY: ["mail jane@example.com", 3]}
    assert sanitizer.json_content(value, "attr") == {"user": {"name": REDACTED}, REDACTED: [f"mail {REDACTED}", 3]}
    assert (sanitizer.dropped_keys, sanitizer.redacted_values) == (1, 3)


def test_json_plan_walks_only_text_that_may_change():
    sanitizer = Sanitizer(DEFAULT_LIMITS, DEFAULT_REDACTION)
    assert not sanitizer.walks_json('[{"role": "user", "content": "hello\\nworld"}]')
    assert sanitizer.walks_json('{"content": "caf\\u00e9"}')
    assert sanitizer.walks_json('{"DB_PASSWORD": "x"}')
    custom_glob = Sanitizer(DEFAULT_LIMITS, compile_redaction(Redact(keys=["*.ssn"])))
    assert custom_glob.walks_json('{"a": 1}')  # *.ssn can match any key: every document is walked
    nothing = Sanitizer(DEFAULT_LIMITS, compile_redaction(Redact(default_rules=False)))
    assert not nothing.walks_json('{"password": "\\u0041"}')


def test_the_c_decoder_redacts_every_former_miss_as_the_reference_does():
    for attributes, resource, _ in MISSES.values():
        data = request(span("s", {**attributes, "keep": "this"}), resource={**PROJECT, **resource}).SerializeToString()
        for redaction in (DEFAULT_REDACTION, compile_redaction(Redact(keys=["*.ssn", "x*"], patterns=[r"this"]))):
            outcome = assert_same(data, DEFAULT_LIMITS, redaction)
            assert outcome[0] == "ok" and outcome[3] + outcome[4] > 0  # something was redacted or dropped
