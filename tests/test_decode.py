"""The reference decoder (decode.decode_request_python): request bytes -> decoded.py's plain data, limits
and redaction applied as it reads; count_spans; Sanitizer.text_plan, which lets the C decoder skip text().

The C decoder must give the same results (test_decode_native.py compares the two).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans as ProtoResourceSpans
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans as ProtoScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from spans import END, NO_REDACTION, SPAN_ID, START, TRACE_ID, attrs, materialized, plain_sanitizer, request, span
from test_hostile import SECRETS

from otel_bridge import decode
from otel_bridge.config import Redact
from otel_bridge.decode import count_spans, count_spans_python, decode_request_python
from otel_bridge.decode.decoded import ResourceSpans, ScopeSpans, Span
from otel_bridge.errors import BadRequestError
from otel_bridge.decode.limits import DEFAULT_LIMITS, SpanLimits
from otel_bridge.decode.redact import DEFAULT_REDACTION, REDACTED, compile_redaction
from otel_bridge.decode.sanitize import Sanitizer

PARENT_ID = bytes.fromhex("1112131415161718")
LINK_TRACE_ID = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
LINK_SPAN_ID = bytes.fromhex("a1a2a3a4a5a6a7a8")


def _full_request() -> ExportTraceServiceRequest:
    """One span with every field set, in a resource and scope with every field set."""
    sp = ProtoSpan(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        trace_state="vendor=a,other=b",
        flags=0x301,
        name="chat gpt-4o",
        kind=ProtoSpan.SPAN_KIND_SERVER,
        start_time_unix_nano=START,
        end_time_unix_nano=END,
        attributes=attrs({"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 7, "flag": True, "ratio": 0.5}),
        dropped_attributes_count=2,
        events=[
            ProtoSpan.Event(
                time_unix_nano=START + 10, name="gen_ai.user.message", attributes=attrs({"content": "hi"}),
                dropped_attributes_count=1,
            ),
            ProtoSpan.Event(time_unix_nano=START + 20, name="exception", attributes=attrs({"exception.type": "E"})),
        ],
        dropped_events_count=3,
        links=[
            ProtoSpan.Link(
                trace_id=LINK_TRACE_ID, span_id=LINK_SPAN_ID, trace_state="k=v", attributes=attrs({"link.kind": "follows"}),
                dropped_attributes_count=4, flags=0x100,
            )
        ],
        dropped_links_count=5,
        status=Status(code=Status.STATUS_CODE_ERROR, message="it broke"),
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ProtoResourceSpans(
                resource=Resource(attributes=attrs({"service.name": "svc", "wandb.project": "p"}), dropped_attributes_count=6),
                scope_spans=[
                    ProtoScopeSpans(
                        scope=InstrumentationScope(
                            name="my.scope", version="2.1", attributes=attrs({"scope.attr": 1}), dropped_attributes_count=8
                        ),
                        spans=[sp],
                    )
                ],
            )
        ]
    )


def _decode(req: ExportTraceServiceRequest, sanitizer: Sanitizer | None = None) -> list[ResourceSpans]:
    return materialized(decode_request_python(req.SerializeToString(), sanitizer or plain_sanitizer()))


def _only_span(decoded: list[ResourceSpans]) -> Span:
    (resource_spans,) = decoded
    (scope_spans,) = resource_spans.scope_spans
    (sp,) = scope_spans.spans
    return sp


# --- every field ------------------------------------------------------------------------------------------------


def test_every_field_of_resource_scope_and_span() -> None:
    decoded = _decode(_full_request())
    assert decoded == [
        ResourceSpans(
            resource={"attributes": {"service": {"name": "svc"}, "wandb": {"project": "p"}}, "dropped_attributes_count": 6},
            scope_spans=[
                ScopeSpans(
                    scope={"name": "my.scope", "version": "2.1", "attributes": {"scope": {"attr": 1}}, "dropped_attributes_count": 8},
                    spans=[
                        Span(
                            trace_id=TRACE_ID,
                            span_id=SPAN_ID,
                            parent_span_id=PARENT_ID,
                            trace_state="vendor=a,other=b",
                            flags=0x301,
                            name="chat gpt-4o",
                            kind=2,
                            start_time_unix_nano=START,
                            end_time_unix_nano=END,
                            attributes={
                                "gen_ai": {"system": "openai", "usage": {"input_tokens": 7}},
                                "flag": True,
                                "ratio": 0.5,
                            },
                            attribute_keys=["gen_ai.system", "gen_ai.usage.input_tokens", "flag", "ratio"],
                            dropped_attributes_count=2,
                            events=[
                                {"name": "gen_ai.user.message", "timestamp": START + 10, "attributes": {"content": "hi"},
                                 "dropped_attributes_count": 1},
                                {"name": "exception", "timestamp": START + 20, "attributes": {"exception": {"type": "E"}},
                                 "dropped_attributes_count": 0},
                            ],
                            event_attribute_keys=[["content"], ["exception.type"]],
                            dropped_events_count=3,
                            links=[
                                {"trace_id": LINK_TRACE_ID.hex(), "span_id": LINK_SPAN_ID.hex(), "trace_state": "k=v",
                                 "attributes": {"link": {"kind": "follows"}}, "dropped_attributes_count": 4, "flags": 0x100},
                            ],
                            dropped_links_count=5,
                            status_code=2,
                            status_message="it broke",
                        )
                    ],
                )
            ],
            routing={"wandb.project": "p"},
        )
    ]
    sp = decoded[0].scope_spans[0].spans[0]
    assert type(sp.trace_id) is bytes and type(sp.kind) is int and type(sp.status_code) is int


def test_unset_fields_decode_to_empty_values() -> None:
    req = ExportTraceServiceRequest(resource_spans=[ProtoResourceSpans(scope_spans=[ProtoScopeSpans(spans=[ProtoSpan()])])])
    assert _decode(req) == [
        ResourceSpans(
            {"attributes": {}, "dropped_attributes_count": 0},
            [
                ScopeSpans(
                    {"name": "", "version": "", "attributes": {}, "dropped_attributes_count": 0},
                    [Span(b"", b"", b"", "", 0, "", 0, 0, 0, {}, [], 0, [], [], 0, [], 0, 0, "")],
                )
            ],
        )
    ]


def test_empty_request_decodes_to_nothing() -> None:
    assert decode_request_python(b"", plain_sanitizer()) == []


def test_resources_and_scopes_keep_their_order_and_spans() -> None:
    req = request(span("a"), span("b"), resource={"r": 1})
    req.resource_spans[0].scope_spans.add(scope=InstrumentationScope(name="second")).spans.append(span("c"))
    req.resource_spans.extend(request(span("d"), resource={"r": 2}, scope=("third", "")).resource_spans)
    decoded = _decode(req)
    assert [r.resource["attributes"] for r in decoded] == [{"r": 1}, {"r": 2}]
    assert [[(s.scope["name"], [sp.name for sp in s.spans]) for s in r.scope_spans] for r in decoded] == [
        [("test.scope", ["a", "b"]), ("second", ["c"])],
        [("third", ["d"])],
    ]


def test_keys_are_collected_for_every_event_and_leave_out_dropped_keys() -> None:
    sanitizer = Sanitizer(DEFAULT_LIMITS, DEFAULT_REDACTION)  # drops *password* keys
    sp = _only_span(
        _decode(
            request(span(attributes={"a.b": 1, "db.password": "x", "c": 2}, events=[("any", {"e.f": 1, "my_password": "y"}), ("x", {})])),
            sanitizer,
        )
    )
    assert sp.attribute_keys == ["a.b", "c"]
    assert sp.event_attribute_keys == [["e.f"], []]
    assert sp.attributes == {"a": {"b": 1}, "c": 2}
    assert sp.events[0]["attributes"] == {"e": {"f": 1}}
    assert sanitizer.dropped_keys == 2


# --- limits and redaction ---------------------------------------------------------------------------------------


def test_limits_cut_every_list_and_count_what_they_cut() -> None:
    limits = SpanLimits(max_attribute_value_length=100, max_attributes=2, max_events=1, max_links=1, max_depth=32)
    sanitizer = Sanitizer(limits, NO_REDACTION)
    many = {f"k{i}": i for i in range(5)}
    req = request(
        span(attributes=many, events=[("e1", many), ("e2", {})], links=[(LINK_TRACE_ID, LINK_SPAN_ID, many)] * 3),
        resource=many,
    )
    req.resource_spans[0].scope_spans[0].scope.attributes.extend(attrs(many))
    (resource_spans,) = _decode(req, sanitizer)
    assert resource_spans.resource == {"attributes": {"k0": 0, "k1": 1}, "dropped_attributes_count": 3}
    assert resource_spans.scope_spans[0].scope["attributes"] == {"k0": 0, "k1": 1}
    assert resource_spans.scope_spans[0].scope["dropped_attributes_count"] == 3
    sp = resource_spans.scope_spans[0].spans[0]
    assert (sp.attributes, sp.attribute_keys, sp.dropped_attributes_count) == ({"k0": 0, "k1": 1}, ["k0", "k1"], 3)
    assert [e["name"] for e in sp.events] == ["e1"] and sp.dropped_events_count == 1
    assert (sp.events[0]["attributes"], sp.events[0]["dropped_attributes_count"]) == ({"k0": 0, "k1": 1}, 3)
    assert sp.event_attribute_keys == [["k0", "k1"]]
    assert len(sp.links) == 1 and sp.dropped_links_count == 2
    assert (sp.links[0]["attributes"], sp.links[0]["dropped_attributes_count"]) == ({"k0": 0, "k1": 1}, 3)
    # resource, scope, span, event, link: 3 attributes each
    assert sanitizer.hits == {"max_attributes": 15, "max_events": 1, "max_links": 2}


def test_dropped_counts_add_to_what_was_sent_and_stop_at_uint32() -> None:
    limits = SpanLimits(max_attribute_value_length=100, max_attributes=1, max_events=0, max_links=0, max_depth=32)
    proto = span(attributes={"a": 1, "b": 2}, events=[("e", {})], links=[(LINK_TRACE_ID, LINK_SPAN_ID, {})])
    proto.dropped_attributes_count = 2**32 - 1
    proto.dropped_events_count = 10
    proto.dropped_links_count = 2**32 - 1
    sp = _only_span(_decode(request(proto), Sanitizer(limits, NO_REDACTION)))
    assert (sp.dropped_attributes_count, sp.dropped_events_count, sp.dropped_links_count) == (2**32 - 1, 11, 2**32 - 1)
    assert (sp.events, sp.event_attribute_keys, sp.links) == ([], [], [])


SECRET = SECRETS["api_key"]


def test_strings_that_are_not_attributes_are_redacted_and_cut() -> None:
    limits = SpanLimits(max_attribute_value_length=20, max_attributes=10, max_events=10, max_links=10, max_depth=32)
    sanitizer = Sanitizer(limits, DEFAULT_REDACTION)
    long = "x" * 30
    proto = span(
        f"key {SECRET}",
        status_code=2,
        status_message=long,
        events=[(f"event {SECRET}", {}), ("short", {})],
        links=[(LINK_TRACE_ID, LINK_SPAN_ID, {})],
    )
    proto.trace_state = long
    proto.links[0].trace_state = f"k={SECRET}"
    req = request(proto, scope=(long, f"v {SECRET}"))
    (resource_spans,) = _decode(req, sanitizer)
    scope = resource_spans.scope_spans[0].scope
    sp = resource_spans.scope_spans[0].spans[0]
    cut = "x" * 20 + "...[truncated: 30 chars]"
    assert (scope["name"], scope["version"]) == (cut, f"v {REDACTED}")
    assert sp.name == f"key {REDACTED}"
    assert sp.status_message == cut
    assert sp.trace_state == cut
    assert [e["name"] for e in sp.events] == [f"event {REDACTED}", "short"]
    assert sp.links[0]["trace_state"] == f"k={REDACTED}"
    assert sanitizer.redacted_values == 4
    assert sanitizer.hits == {"max_attribute_value_length": 3}


def test_attribute_values_everywhere_are_sanitized() -> None:
    limits = SpanLimits(max_attribute_value_length=40, max_attributes=10, max_events=10, max_links=10, max_depth=2)
    sanitizer = Sanitizer(limits, DEFAULT_REDACTION)
    values = {"v": f"my {SECRET}", "deep": {"a": {"b": 1}}, "blob": b"\x00" * 50}
    req = request(span(attributes=values, events=[("e", values)], links=[(LINK_TRACE_ID, LINK_SPAN_ID, values)]), resource=values)
    req.resource_spans[0].scope_spans[0].scope.attributes.extend(attrs(values))
    (resource_spans,) = _decode(req, sanitizer)
    sp = resource_spans.scope_spans[0].spans[0]
    trees = [resource_spans.resource["attributes"], resource_spans.scope_spans[0].scope["attributes"], sp.attributes,
             sp.events[0]["attributes"], sp.links[0]["attributes"]]
    for tree in trees:
        assert tree["v"] == f"my {REDACTED}"
        assert tree["deep"] == {"a": "[truncated: nested deeper than 2 levels]"}
        assert tree["blob"].endswith("...[truncated: 50 bytes]")
    assert sanitizer.redacted_values == 5
    assert sanitizer.hits == {"max_depth": 5, "max_attribute_value_length": 5}


class _Recording(Sanitizer):
    """Records the strings text() is given, in order."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        super().__init__(DEFAULT_LIMITS, DEFAULT_REDACTION)
        self.seen: list[str] = []

    def text(self, value: str) -> str:
        self.seen.append(value)
        return super().text(value)


def test_order_of_sanitizer_calls() -> None:
    """Each message's fields in field-number order, as the C decoder meets them on the wire: resource
    attributes, scope name, version, attributes, then per span: trace_state, name, attributes, each event
    (name, attributes), each link (trace_state, attributes), the status message. The tallies do not depend
    on it; the two decoders run one algorithm."""
    proto = span(
        "name", {"span.attr": "sa"}, status_code=2, status_message="status",
        events=[("ev1", {"e1": "ea1"}), ("ev2", {"e2": "ea2"})],
        links=[(LINK_TRACE_ID, LINK_SPAN_ID, {"l1": "la1"}), (LINK_TRACE_ID, LINK_SPAN_ID, {"l2": "la2"})],
    )
    proto.trace_state = "ts"
    proto.links[0].trace_state, proto.links[1].trace_state = "lts1", "lts2"
    req = request(proto, resource={"r": "ra"}, scope=("sname", "sversion"))
    req.resource_spans[0].scope_spans[0].scope.attributes.extend(attrs({"s": "sa2"}))
    sanitizer = _Recording()
    _decode(req, sanitizer)
    assert sanitizer.seen == [
        "ra", "sname", "sversion", "sa2",
        "ts", "name", "sa", "ev1", "ea1", "ev2", "ea2", "lts1", "la1", "lts2", "la2", "status",
    ]


def test_limits_are_counted_in_the_order_the_c_decoder_meets_them() -> None:
    """A list's cut is counted when its message is done: an event's before its span's, a span's attributes
    before its events and links, a resource's after its scopes."""
    limits = SpanLimits(max_attribute_value_length=100, max_attributes=1, max_events=1, max_links=1, max_depth=5)
    proto = span(
        "s", {"a": 1, "b": 2},
        events=[("ev", {"x": 1, "y": 2}), ("ev2", {})],
        links=[(LINK_TRACE_ID, LINK_SPAN_ID, {"l": 1}), (LINK_TRACE_ID, LINK_SPAN_ID, {})],
    )
    data = request(proto, resource={"r1": 1, "r2": 2}).SerializeToString()
    for decoder in {decode_request_python, decode.decode_request}:  # the C decoder too, when it is built
        sanitizer = Sanitizer(limits, NO_REDACTION)
        sp = _only_span(materialized(decoder(data, sanitizer)))
        assert list(sanitizer.hits.items()) == [("max_attributes", 3), ("max_events", 1), ("max_links", 1)]
        assert (sp.dropped_attributes_count, sp.dropped_events_count, sp.dropped_links_count) == (1, 1, 1)
        assert sp.events[0]["dropped_attributes_count"] == 1


# --- errors and count_spans -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff\xff", "is not a protobuf ExportTraceServiceRequest"),
        (b"\x0a\x05ab", "(truncated, or not protobuf at all)"),
        (request(span("ok")).SerializeToString()[:-3], "is not a protobuf ExportTraceServiceRequest"),
    ],
)
def test_garbage_is_a_bad_request(data: bytes, message: str) -> None:
    for function in (lambda d: decode_request_python(d, plain_sanitizer()), count_spans_python):
        with pytest.raises(BadRequestError) as caught:
            function(data)
        assert f"request ({len(data)} bytes) is not a protobuf ExportTraceServiceRequest" in str(caught.value)
        assert message in str(caught.value)


def test_bad_utf8_names_why() -> None:
    data = bytearray(request(span("name-é")).SerializeToString())
    data[data.index("é".encode())] = 0xFF
    with pytest.raises(BadRequestError, match="protobuf requires UTF-8 in strings"):
        decode_request_python(bytes(data), plain_sanitizer())


def test_count_spans() -> None:
    req = request(span("a"), span("b"))
    req.resource_spans[0].scope_spans.add().spans.append(span("c"))
    req.resource_spans.extend(request(span("d")).resource_spans)
    data = req.SerializeToString()
    assert count_spans_python(data) == count_spans(data) == 4
    assert count_spans_python(b"") == count_spans(b"") == 0


def test_the_implementation_in_use_is_named() -> None:
    assert decode.NATIVE in (True, False)
    if decode.NATIVE:
        from otel_bridge.decode import _decode

        assert (decode.decode_request, decode.count_spans) == (decode.decode_request_native, _decode.count_spans)
    else:
        assert (decode.decode_request, decode.count_spans) == (decode_request_python, count_spans_python)


def test_the_c_decoders_field_numbers_are_the_descriptors() -> None:
    """Every row of _otlp_fields.h names a field of the opentelemetry-proto descriptors, by its number."""
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    messages = {
        "ExportTraceServiceRequest": ExportTraceServiceRequest, "ResourceSpans": trace_pb2.ResourceSpans,
        "Resource": resource_pb2.Resource, "EntityRef": common_pb2.EntityRef, "ScopeSpans": trace_pb2.ScopeSpans,
        "InstrumentationScope": common_pb2.InstrumentationScope, "Span": trace_pb2.Span, "Event": trace_pb2.Span.Event,
        "Link": trace_pb2.Span.Link, "Status": trace_pb2.Status, "KeyValue": common_pb2.KeyValue,
        "AnyValue": common_pb2.AnyValue, "ArrayValue": common_pb2.ArrayValue, "KeyValueList": common_pb2.KeyValueList,
    }
    header = (Path(decode.__file__).parent / "_otlp_fields.h").read_text()
    rows = re.findall(r"X\((\w+), (\w+), (\d+)\)", header)
    assert len(rows) > 50
    for message, field, number in rows:
        assert messages[message].DESCRIPTOR.fields_by_name[field].number == int(number), (message, field)


# --- text_plan --------------------------------------------------------------------------------------------------


def _skips(plan: tuple, s: str) -> bool:
    """Whether the C decoder, following Sanitizer.text_plan, leaves `s` without calling text()."""
    max_length, call_always, min_length, rules = plan
    n = len(s)
    if call_always or n > max_length:
        return False
    if n < min_length:
        return True
    folded = s.encode().lower()  # ASCII case only, as the C scan folds it
    return not any(rule_min <= n and any(anchor.encode() in folded for anchor in anchors) for rule_min, anchors in rules)


_REDACTIONS = {
    "default": DEFAULT_REDACTION,
    "none": NO_REDACTION,
    "custom": compile_redaction(Redact(patterns=[r"secret-\d+"])),
    "keys-only": compile_redaction(Redact(default_rules=False, keys=["*token*"])),
}
_STRINGS = [
    "", "a", "hello", "hello world", "x" * 127, "x" * 128, "x" * 129, "x" * 5000, "user@", "a@b.co", "mail jane@example.com",
    "secret-12", "no secret here", "ask-me", "sk-", "Bearer", "Bearer short", "eyJ", "gho_", "A" * 19, "A" * 20,
    "AKIA", "x" * 120 + "@", "€" * 50, "\x00\n\t", *SECRETS.values(), *(f"text {s} text" for s in SECRETS.values()),
    *(s[:-1] for s in SECRETS.values()), *(s + "x" * 200 for s in SECRETS.values()),
]
_PLAN_LIMITS = (DEFAULT_LIMITS, SpanLimits(max_attribute_value_length=20, max_attributes=1, max_events=1, max_links=1, max_depth=1))


@pytest.mark.parametrize("redaction", sorted(_REDACTIONS))
def test_text_plan_skips_only_strings_text_leaves_alone(redaction: str) -> None:
    for limits in _PLAN_LIMITS:
        sanitizer = Sanitizer(limits, _REDACTIONS[redaction])
        plan = sanitizer.text_plan
        for s in _STRINGS:
            if _skips(plan, s):
                assert sanitizer.text(s) is s, (plan, s)


@settings(max_examples=500, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(_REDACTIONS)),
    st.sampled_from(_PLAN_LIMITS),
    st.lists(st.one_of(st.text(max_size=40), st.sampled_from(["@", "sk-", "SK-", "xox", "Bearer ", "bEaReR ", "eyJ", "AIza", "gh", "AKIA", "-----BEGIN", "hf_", "api:", "?token=", *SECRETS.values()])), max_size=8).map("".join),
)
def test_text_plan_holds_for_generated_strings(redaction: str, limits: SpanLimits, s: str) -> None:
    sanitizer = Sanitizer(limits, _REDACTIONS[redaction])
    if _skips(sanitizer.text_plan, s):
        assert sanitizer.text(s) is s


def test_text_plan_is_worth_having() -> None:
    """Most short plain strings skip text(); anything redaction might touch does not."""
    plan = Sanitizer(DEFAULT_LIMITS, DEFAULT_REDACTION).text_plan
    assert _skips(plan, "hello world") and _skips(plan, "gpt-4o") and _skips(plan, "chat.completions")
    assert not any(_skips(plan, s) for s in SECRETS.values())
    assert _skips(plan, "plain words " * 100)  # long text holding no anchor: text() is not called
    assert not _skips(plan, "plain words " * 100 + "sk-")
    assert not _skips(plan, "mail me at " + "x" * 200 + "@")
    assert _skips(Sanitizer(DEFAULT_LIMITS, NO_REDACTION).text_plan, "x" * 5000)
    assert not _skips(Sanitizer(DEFAULT_LIMITS, _REDACTIONS["custom"]).text_plan, "hello")
    assert not _skips(Sanitizer(_PLAN_LIMITS[1], NO_REDACTION).text_plan, "x" * 21)
