"""The C decoder (otel_bridge.decode._decode) against the Python reference (decode.decode_request_python): the same
values, the same tallies of what limits and redaction changed, the same errors, on the golden fixtures, the
benchmark's spans, generated requests under tight and default limits, and hostile bytes.

In CI the extension must be built (`pip install .` compiles it); elsewhere these tests skip without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from otel_bridge import decode
from otel_bridge.config import Limits, Redact
from otel_bridge.errors import BadRequestError
from otel_bridge.decode.limits import DEFAULT_LIMITS, SpanLimits
from otel_bridge.decode.otlp import parse_request
from otel_bridge.decode.redact import DEFAULT_REDACTION, compile_redaction
from otel_bridge.decode.sanitize import Sanitizer
from fuzz_strategies import REQUEST, mutations
from spans import attrs, materialized, request, span
from test_otlp import TREE_CASES

if not decode.NATIVE:
    if os.environ.get("CI"):
        pytest.fail("otel_bridge.decode._decode is not built: `pip install .` compiles it (needs a C compiler)", pytrace=False)
    pytest.skip("otel_bridge.decode._decode is not built", allow_module_level=True)

from otel_bridge.decode import _decode  # noqa: E402

FIXTURES = sorted((Path(__file__).parent / "testdata" / "otlp").glob("*.json"))
TIGHT_LIMITS = SpanLimits(max_attribute_value_length=12, max_attributes=3, max_events=1, max_links=1, max_depth=3)
CUSTOM_REDACTION = compile_redaction(Redact(patterns=[r"secret-\d+"], keys=["*token*"]))
NO_REDACTION = compile_redaction(Redact(default_rules=False))


def _outcome(decoder, data: bytes, limits: SpanLimits, redaction) -> tuple:
    sanitizer = Sanitizer(limits, redaction)
    try:
        decoded = materialized(decoder(data, sanitizer))
    except BadRequestError as exc:
        return ("error", str(exc))
    return ("ok", decoded, sanitizer.hits, sanitizer.redacted_values, sanitizer.dropped_keys)


def _first_difference(a, b, path="outcome") -> str:
    """Where two outcomes first differ, for a readable failure."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} {a!r:.200} != {type(b).__name__} {b!r:.200}"
    if isinstance(a, dict) and list(a) != list(b):
        return f"{path}: keys {list(a)!r:.300} != {list(b)!r:.300}"
    if isinstance(a, (list, tuple)) and len(a) != len(b):
        return f"{path}: length {len(a)} != {len(b)}"
    if isinstance(a, (dict, list, tuple)):
        pairs = zip(a.values(), b.values(), a) if isinstance(a, dict) else zip(a, b, range(len(a)))
        for x, y, where in pairs:
            if x != y:
                return _first_difference(x, y, f"{path}[{where!r}]")
    return f"{path}: {a!r:.300} != {b!r:.300}"


def assert_same(data: bytes, limits: SpanLimits = DEFAULT_LIMITS, redaction=DEFAULT_REDACTION) -> tuple:
    native = _outcome(decode.decode_request_native, data, limits, redaction)
    python = _outcome(decode.decode_request_python, data, limits, redaction)
    assert native == python, _first_difference(native, python)
    if native[0] == "ok":
        assert _decode.count_spans(data) == decode.count_spans_python(data)
    return native


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
@pytest.mark.parametrize(
    "limits, redaction",
    [(DEFAULT_LIMITS, DEFAULT_REDACTION), (TIGHT_LIMITS, CUSTOM_REDACTION), (DEFAULT_LIMITS, NO_REDACTION)],
    ids=["defaults", "tight-custom", "no-redaction"],
)
def test_golden_fixtures_decode_the_same(path, limits, redaction):
    for parsed in parse_request(path.read_bytes()):
        outcome = assert_same(parsed.SerializeToString(), limits, redaction)
        assert outcome[0] == "ok"


def test_benchmark_spans_decode_the_same():
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    from e2e import build_requests

    data = build_requests(1, 64)[0]
    outcome = assert_same(data)
    assert sum(len(s.spans) for r in outcome[1] for s in r.scope_spans) == 64


@pytest.mark.parametrize(("attributes", "expected"), TREE_CASES)
def test_attribute_trees_are_built_the_same(attributes, expected):
    """Every case of the reference's attribute_tree (test_otlp), on a span, its events, links, resource, scope."""
    sp = span(attributes=attributes, events=[("e", attributes)], links=[(b"\x01" * 16, b"\x02" * 8, attributes)])
    req = request(sp, resource=attributes)
    req.resource_spans[0].scope_spans[0].scope.attributes.extend(attrs(attributes))
    outcome = assert_same(req.SerializeToString(), DEFAULT_LIMITS, NO_REDACTION)
    (resource_spans,) = outcome[1]
    assert resource_spans.resource["attributes"] == expected


def test_limits_and_redaction_reach_every_string_field():
    secret = "sk-proj-abcdefghijklmnop1234567890"
    data = request(
        span(
            f"call {secret}",
            {f"k{i}": f"value {i} {secret}" for i in range(6)} | {"auth_token": "x", "deep.a.b.c.d": 1},
            status_code=2,
            status_message=f"failed with {secret}",
            events=[("exception", {"exception.message": secret}), ("second", {}), ("third", {})],
        ),
        resource={"wandb.project": "e/p", "api_token": "y"} | {f"r{i}": i for i in range(5)},
    ).SerializeToString()
    for limits in (DEFAULT_LIMITS, TIGHT_LIMITS):
        for redaction in (DEFAULT_REDACTION, CUSTOM_REDACTION, NO_REDACTION):
            assert assert_same(data, limits, redaction)[0] == "ok"


def _nested_array(levels: int) -> bytes:
    value = AnyValue(string_value="x")
    for _ in range(levels):
        value = AnyValue(array_value=ArrayValue(values=[value]))
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add().attributes.add(key="k", value=value)
    return req.SerializeToString()


def _nested_kvlist(levels: int) -> bytes:
    value = AnyValue(kvlist_value=KeyValueList())
    for _ in range(levels):
        value = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=value)]))
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add().attributes.add(key="k", value=value)
    return req.SerializeToString()


@pytest.mark.parametrize("levels", range(28, 50))
def test_the_message_depth_limit_is_the_protobuf_runtimes(levels):
    # Either both refuse the request (and say why the same way) or both decode it.
    assert_same(_nested_array(levels))
    assert_same(_nested_kvlist(levels // 2 + 8))


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05\x12\x03\x12\x01",  # a length past the end
        b"\x0a",  # a tag with no length
        b"\x08" + b"\xff" * 11,  # a varint of 11 bytes
        b"\x0a\x06\x12\x04\x12\x02\x2a\xff",  # a span name of invalid UTF-8
        b"\x0b\x0c",  # an empty group
        b"\x0b\x0a\x00",  # a group never closed
        b"\x0c",  # an end group with no start
        b"\x0e",  # wire type 6
        b"\x00",  # field number 0
        b"\x08\x01\x10\x02",  # unknown scalar fields
        b"\x0a\x04\x12\x02\x12\x00" + b"\x0a\x00",  # an empty span, an empty resource
    ],
)
def test_malformed_bytes_are_refused_or_decoded_the_same(data):
    assert_same(data)


_SEED = request(
    span("seed", {"gen_ai.usage.input_tokens": 5, "input.value": '[{"role": "user", "content": "hi"}]', "x.0": 1},
         events=[("e", {"k": 1})]),
    resource={"wandb.entity": "e", "wandb.project": "p"},
).SerializeToString()

_SETTINGS = settings(
    max_examples=int(os.environ.get("DECODE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(REQUEST, st.sampled_from(["defaults", "tight-custom", "no-redaction"]))
def test_generated_requests_decode_the_same(req, variant):
    limits, redaction = {
        "defaults": (DEFAULT_LIMITS, DEFAULT_REDACTION),
        "tight-custom": (TIGHT_LIMITS, CUSTOM_REDACTION),
        "no-redaction": (SpanLimits.from_config(Limits(max_depth=4)), NO_REDACTION),
    }[variant]
    assert_same(req.SerializeToString(), limits, redaction)


@_SETTINGS
@given(st.one_of(st.binary(max_size=256), mutations(_SEED)))
def test_hostile_bytes_never_crash_and_are_refused_with_a_reason(data):
    # Canonical encodings must match the reference exactly (above); for arbitrary bytes the C decoder must
    # answer, never crash, and refuse only with the reason the bridge reports.
    sanitizer = Sanitizer(DEFAULT_LIMITS, DEFAULT_REDACTION)
    try:
        materialized(decode.decode_request_native(data, sanitizer))
    except BadRequestError as exc:
        assert "is not a protobuf ExportTraceServiceRequest" in str(exc)
        with pytest.raises(BadRequestError):
            _decode.count_spans(data)
    else:
        assert _decode.count_spans(data) >= 0


@pytest.mark.parametrize("filler", ["plain words ", "x", "€ü "])
@pytest.mark.parametrize("where", ["start", "middle", "end", "alone"])
def test_secrets_anywhere_in_long_text_are_found_by_the_anchor_scan(filler, where):
    from test_hostile import SECRETS

    text = filler * 80
    values = {}
    for name, secret in SECRETS.items():
        # The secret as a word of its own: glued to other letters it is not a token (the rules say so).
        values[name] = {"start": f"{secret} {text}", "middle": f"{text} {secret} {text}", "end": f"{text} {secret}", "alone": secret}[where]
    data = request(span("s", values, status_message=values["api_key"] if "api_key" in values else "")).SerializeToString()
    outcome = assert_same(data)
    (resource,) = outcome[1]
    (sp,) = resource.scope_spans[0].spans
    for secret in SECRETS.values():
        assert all(secret not in str(v) for v in sp.attributes.values())
