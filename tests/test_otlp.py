"""otel_bridge.decode.otlp: AnyValue decoding, attribute trees, times and OTLP/JSON parsing."""

from __future__ import annotations

import base64
import calendar
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from spans import END, SPAN_ID, START, TRACE_ID, attrs, plain_sanitizer, request, span

from otel_bridge.decode.otlp import CONFLICT_KEY, any_value, attribute_tree, iso_time, parse_otlp_json, parse_request

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


# --- any_value ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(AnyValue(string_value="héllo"), "héllo", id="string"),
        pytest.param(AnyValue(string_value=""), "", id="empty-string"),
        pytest.param(AnyValue(bool_value=True), True, id="bool-true"),
        pytest.param(AnyValue(bool_value=False), False, id="bool-false"),
        pytest.param(AnyValue(int_value=0), 0, id="int-zero"),
        pytest.param(AnyValue(int_value=-42), -42, id="int-negative"),
        pytest.param(AnyValue(int_value=INT64_MAX), INT64_MAX, id="int64-max"),
        pytest.param(AnyValue(int_value=INT64_MIN), INT64_MIN, id="int64-min"),
        pytest.param(AnyValue(double_value=1.5), 1.5, id="double"),
        pytest.param(AnyValue(double_value=-0.25), -0.25, id="double-negative"),
        pytest.param(AnyValue(double_value=float("nan")), "nan", id="nan"),
        pytest.param(AnyValue(double_value=float("inf")), "inf", id="inf"),
        pytest.param(AnyValue(double_value=float("-inf")), "-inf", id="-inf"),
        pytest.param(AnyValue(bytes_value=b"\x00\xffhi"), base64.b64encode(b"\x00\xffhi").decode(), id="bytes"),
        pytest.param(AnyValue(bytes_value=b""), "", id="bytes-empty"),
        pytest.param(
            AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="a")])),
            [1, "a"],
            id="array",
        ),
        pytest.param(AnyValue(array_value=ArrayValue()), [], id="array-empty"),
        pytest.param(
            AnyValue(
                array_value=ArrayValue(
                    values=[AnyValue(array_value=ArrayValue(values=[AnyValue(double_value=float("inf"))]))]
                )
            ),
            [["inf"]],
            id="array-nested",
        ),
        pytest.param(
            AnyValue(
                kvlist_value=KeyValueList(
                    values=[
                        KeyValue(key="a", value=AnyValue(int_value=1)),
                        KeyValue(key="b.c", value=AnyValue(bytes_value=b"x")),
                        KeyValue(key="d", value=AnyValue(kvlist_value=KeyValueList())),
                    ]
                )
            ),
            {"a": 1, "b.c": base64.b64encode(b"x").decode(), "d": {}},  # kvlist keys are not unflattened
            id="kvlist",
        ),
        pytest.param(  # keyed exactly 0..n-1, in any order: a list, as the same keys sent flattened make one
            AnyValue(kvlist_value=KeyValueList(values=[
                KeyValue(key="1", value=AnyValue(string_value="b")), KeyValue(key="0", value=AnyValue(string_value="a"))
            ])),
            ["a", "b"],
            id="kvlist-indexed-to-list",
        ),
        pytest.param(
            AnyValue(kvlist_value=KeyValueList(values=[
                KeyValue(key="0", value=AnyValue(string_value="a")), KeyValue(key="2", value=AnyValue(string_value="c"))
            ])),
            {"0": "a", "2": "c"},
            id="kvlist-gap-stays-dict",
        ),
        pytest.param(AnyValue(), None, id="empty-anyvalue"),
    ],
)
def test_any_value(value: AnyValue, expected: object) -> None:
    assert any_value(value, plain_sanitizer(), 32, "key") == expected


@pytest.mark.parametrize("number", [INT64_MAX, INT64_MIN, 2**53 + 1, -(2**53) - 1])
def test_any_value_int64_is_exact_and_survives_json(number: int) -> None:
    result = any_value(AnyValue(int_value=number), plain_sanitizer(), 32, "key")
    assert type(result) is int and result == number
    assert json.loads(json.dumps(result)) == number  # no float detour


# --- attribute_tree -------------------------------------------------------------------------------------------


TREE_CASES = [
    pytest.param({}, {}, id="empty"),
    pytest.param({"a": 1}, {"a": 1}, id="flat"),
    pytest.param({"a.b.c": 1, "a.b.d": "x", "a.e": True}, {"a": {"b": {"c": 1, "d": "x"}, "e": True}}, id="dotted"),
    pytest.param({"llm.token_count.prompt": 3}, {"llm": {"token_count": {"prompt": 3}}}, id="dotted-3"),
    # JSON text: parsed only when it starts with {, [ or " and is valid
    pytest.param({"a": '{"k": [1, 2]}'}, {"a": {"k": [1, 2]}}, id="json-object"),
    pytest.param({"a": "[1, {\"b\": null}]"}, {"a": [1, {"b": None}]}, id="json-array"),
    pytest.param({"a.b": '{"c": 1}'}, {"a": {"b": {"c": 1}}}, id="json-under-dotted-key"),
    pytest.param({"a": "{not json"}, {"a": "{not json"}, id="invalid-json-object-kept"),
    pytest.param({"a": "[1, 2"}, {"a": "[1, 2"}, id="invalid-json-array-kept"),
    pytest.param({"a": "123"}, {"a": "123"}, id="number-string-not-parsed"),
    pytest.param({"a": "true"}, {"a": "true"}, id="bool-string-not-parsed"),
    # MLflow writes every value as JSON text: its strings arrive quoted
    pytest.param({"a": '"CHAT_MODEL"'}, {"a": "CHAT_MODEL"}, id="json-string-decoded"),
    pytest.param({"a": '"a" and "b"'}, {"a": '"a" and "b"'}, id="invalid-json-string-kept"),
    pytest.param({"a": '"open'}, {"a": '"open'}, id="unterminated-json-string-kept"),
    pytest.param({"a": '"'}, {"a": '"'}, id="lone-quote-kept"),
    pytest.param({"a": ' {"b": 1}'}, {"a": ' {"b": 1}'}, id="leading-space-not-parsed"),
    pytest.param({"a": ["[1]"]}, {"a": ["[1]"]}, id="strings-inside-arrays-not-parsed"),
    # numeric keys -> lists only when exactly 0..n-1
    pytest.param(
        {"p.0.role": "user", "p.0.content": "hi", "p.1.role": "assistant"},
        {"p": [{"role": "user", "content": "hi"}, {"role": "assistant"}]},
        id="indexed-to-list",
    ),
    pytest.param({"p.1": "b", "p.0": "a", "p.2": "c"}, {"p": ["a", "b", "c"]}, id="indexed-any-arrival-order"),
    pytest.param({"p.0": "a", "p.2": "c"}, {"p": {"0": "a", "2": "c"}}, id="gap-stays-dict"),
    pytest.param({"p.1": "b", "p.2": "c"}, {"p": {"1": "b", "2": "c"}}, id="not-from-zero-stays-dict"),
    pytest.param({"p.0": "a", "p.x": "c"}, {"p": {"0": "a", "x": "c"}}, id="mixed-keys-stay-dict"),
    pytest.param({"p.00": "a", "p.1": "b"}, {"p": {"00": "a", "1": "b"}}, id="leading-zero-stays-dict"),
    pytest.param({"p.0": "a", "p.²": "b"}, {"p": {"0": "a", "²": "b"}}, id="unicode-digit-stays-dict"),
    pytest.param(
        {"a.0.b.0": "x", "a.0.b.1": "y", "a.1.b.0": "z"},
        {"a": [{"b": ["x", "y"]}, {"b": ["z"]}]},
        id="nested-lists",
    ),
    pytest.param({"0": "a", "1": "b"}, {"0": "a", "1": "b"}, id="top-level-stays-dict"),
    # a scalar `x` beside `x.y`: both kept, the scalar under "_value", in either arrival order
    pytest.param({"x": 1, "x.y": 2}, {"x": {CONFLICT_KEY: 1, "y": 2}}, id="scalar-then-subkey"),
    pytest.param({"x.y": 2, "x": 1}, {"x": {CONFLICT_KEY: 1, "y": 2}}, id="subkey-then-scalar"),
    pytest.param({"x": "s", "x.y.z": 2}, {"x": {CONFLICT_KEY: "s", "y": {"z": 2}}}, id="scalar-then-deep-subkey"),
    pytest.param({"x.y.z": 2, "x.y": "s"}, {"x": {"y": {CONFLICT_KEY: "s", "z": 2}}}, id="deep-subkey-then-scalar"),
    pytest.param({"x": '{"a": 1}', "x.b": 2}, {"x": {"a": 1, "b": 2}}, id="json-object-then-subkey-merged"),
    pytest.param({"x.b": 2, "x": '{"a": 1}'}, {"x": {"a": 1, "b": 2}}, id="subkey-then-json-object-merged"),
    # a JSON array beside indexed sub-keys: merged by index
    pytest.param(
        {"m": '[{"role": "user"}, {"role": "assistant"}]', "m.0.content": "hi"},
        {"m": [{"role": "user", "content": "hi"}, {"role": "assistant"}]},
        id="json-array-then-indexed-subkeys",
    ),
    pytest.param(
        {"m.0.content": "hi", "m": '[{"role": "user"}, {"role": "assistant"}]'},
        {"m": [{"role": "user", "content": "hi"}, {"role": "assistant"}]},
        id="indexed-subkeys-then-json-array",
    ),
    pytest.param({"a": 1, "a.": 2}, {"a": {CONFLICT_KEY: 1, "": 2}}, id="trailing-dot"),
    # values that meet at one key merge depth first, as Weave merges them (JSON text and dotted sub-keys fill
    # each other in, lists by index), losing nothing: a scalar beside a structure stays under "_value"
    pytest.param(
        {"m.0.calls.0.id": "c0", "m.0.calls.1.id": "c1", "m": '[{"role": "a", "calls": [{"id": "c0", "n": 1}]}]'},
        {"m": [{"role": "a", "calls": [{"id": "c0", "n": 1}, {"id": "c1"}]}]},
        id="indexed-subkeys-then-json-deep-merge",
    ),
    pytest.param(
        {"m": '[{"role": "a", "calls": [{"id": "c0", "n": 1}]}]', "m.0.calls.0.id": "c0", "m.0.calls.1.id": "c1"},
        {"m": [{"role": "a", "calls": [{"id": "c0", "n": 1}, {"id": "c1"}]}]},
        id="json-then-indexed-subkeys-deep-merge",
    ),
    pytest.param(
        {"x.a.b": 1, "x": '{"a": {"c": 2}, "d": 3}'}, {"x": {"a": {"b": 1, "c": 2}, "d": 3}}, id="dicts-merge-deep"
    ),
    pytest.param({"x": '{"a": {"b": 1}}', "x.a": "s"}, {"x": {"a": {"b": 1, CONFLICT_KEY: "s"}}}, id="scalar-into-json-object"),
    pytest.param({"x.a": "s", "x": '{"a": [1]}'}, {"x": {"a": {CONFLICT_KEY: "s", "0": 1}}}, id="scalar-then-json-array"),
    pytest.param({"x.a": '{"b": 1}', "x": '{"a": {"b": 2}}'}, {"x": {"a": {"b": 2}}}, id="later-of-two-scalars"),
    pytest.param({"x": "[1, 2]", "x.k": 3}, {"x": {"0": 1, "1": 2, "k": 3}}, id="json-array-beside-named-subkey"),
    pytest.param({"x": '{"a": [{"b": 1}]}', "x.a.0.c": 2}, {"x": {"a": [{"b": 1, "c": 2}]}}, id="subkeys-into-json-object-array"),
    pytest.param({"x": '{"0": "a"}'}, {"x": {"0": "a"}}, id="json-object-keeps-its-shape"),
    pytest.param({"p": {"1": "b", "0": "a"}, "p.2": "c"}, {"p": ["a", "b", "c"]}, id="kvlist-list-then-indexed-subkey"),
    pytest.param({"p.1": "b", "p": {"0": "a"}}, {"p": ["a", "b"]}, id="indexed-subkey-then-kvlist-list"),
]


@pytest.mark.parametrize(("attributes", "expected"), TREE_CASES)
def test_attribute_tree(attributes: dict, expected: dict) -> None:
    assert attribute_tree(attrs(attributes), plain_sanitizer()) == expected


def test_attribute_tree_repeated_key_last_wins() -> None:
    kvs = [KeyValue(key="a", value=AnyValue(int_value=1)), KeyValue(key="a", value=AnyValue(int_value=2))]
    assert attribute_tree(kvs, plain_sanitizer()) == {"a": 2}


def test_attribute_tree_keeps_value_kinds() -> None:
    tree = attribute_tree(
        attrs({"s": "x", "i": INT64_MAX, "f": float("nan"), "b": b"\x01", "l": [1, "[2]"], "kv": {"k.v": 1}, "n": None}),
        plain_sanitizer(),
    )
    assert tree == {
        "s": "x",
        "i": INT64_MAX,
        "f": "nan",
        "b": base64.b64encode(b"\x01").decode(),
        "l": [1, "[2]"],
        "kv": {"k.v": 1},
        "n": None,
    }


# --- iso_time -------------------------------------------------------------------------------------------------


def _iso_reference(unix_nano: int) -> str:
    """Independent computation with datetime (microseconds, truncated towards the past)."""
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=unix_nano // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ns(year: int, month: int, day: int, hour: int, minute: int, second: int, nanos: int) -> int:
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) * 1_000_000_000 + nanos


@pytest.mark.parametrize(
    ("unix_nano", "expected"),
    [
        pytest.param(START, "2026-01-01T00:00:00.123456Z", id="exact"),
        pytest.param(END, "2026-01-01T00:00:01.623456Z", id="exact-end"),
        pytest.param(0, "1970-01-01T00:00:00.000000Z", id="epoch"),
        pytest.param(999, "1970-01-01T00:00:00.000000Z", id="sub-microsecond-truncated"),
        pytest.param(1_999, "1970-01-01T00:00:00.000001Z", id="truncated-not-rounded"),
        pytest.param(999_999_999, "1970-01-01T00:00:00.999999Z", id="no-round-up-to-next-second"),
        pytest.param(_ns(2024, 2, 29, 12, 34, 56, 789_012_345), "2024-02-29T12:34:56.789012Z", id="leap-day"),
        pytest.param(_ns(2024, 12, 31, 23, 59, 59, 999_999_000), "2024-12-31T23:59:59.999999Z", id="leap-year-end"),
        pytest.param(_ns(2100, 3, 1, 0, 0, 0, 0), "2100-03-01T00:00:00.000000Z", id="2100-not-leap"),
    ],
)
def test_iso_time(unix_nano: int, expected: str) -> None:
    assert iso_time(unix_nano) == expected
    assert iso_time(unix_nano) == _iso_reference(unix_nano)


def test_iso_time_stable_across_calls_and_local_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    first = iso_time(START)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert [iso_time(START) for _ in range(3)] == [first] * 3
    finally:
        monkeypatch.undo()
        time.tzset()
    assert iso_time(START) == first


# --- parse_otlp_json / parse_request --------------------------------------------------------------------------


def _json_request(**span_fields: object) -> dict:
    span_doc = {
        "traceId": TRACE_ID.hex(),
        "spanId": SPAN_ID.hex(),
        "parentSpanId": "",
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": str(START),
        "endTimeUnixNano": str(END),
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "big", "value": {"intValue": str(INT64_MAX)}},
            {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x01\x02").decode()}},
        ],
        "status": {"code": 2, "message": "boom"},
    }
    span_doc.update(span_fields)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeSpans": [{"scope": {"name": "sc", "version": "1"}, "spans": [span_doc]}],
            }
        ]
    }


def test_parse_otlp_json_hex_ids_and_camel_case() -> None:
    parent = "1122334455667788"
    link_trace, link_span = "aa" * 16, "bb" * 8
    doc = _json_request(
        parentSpanId=parent,
        links=[{"traceId": link_trace, "spanId": link_span, "traceState": "k=v"}],
    )
    result = parse_otlp_json(json.dumps(doc).encode())
    assert isinstance(result, ExportTraceServiceRequest)
    resource_spans = result.resource_spans[0]
    assert resource_spans.resource.attributes[0].value.string_value == "svc"
    assert resource_spans.scope_spans[0].scope.name == "sc"
    parsed = resource_spans.scope_spans[0].spans[0]
    assert parsed.trace_id == TRACE_ID
    assert parsed.span_id == SPAN_ID
    assert parsed.parent_span_id == bytes.fromhex(parent)
    assert parsed.links[0].trace_id == bytes.fromhex(link_trace)
    assert parsed.links[0].span_id == bytes.fromhex(link_span)
    assert parsed.links[0].trace_state == "k=v"
    assert parsed.name == "chat"
    assert parsed.kind == 3
    assert parsed.start_time_unix_nano == START
    assert parsed.end_time_unix_nano == END
    assert (parsed.status.code, parsed.status.message) == (2, "boom")
    assert attribute_tree(parsed.attributes, plain_sanitizer()) == {
        "gen_ai": {"request": {"model": "gpt-4o"}},
        "big": INT64_MAX,
        "raw": base64.b64encode(b"\x01\x02").decode(),
    }


def test_parse_otlp_json_uppercase_hex_and_str_input() -> None:
    doc = _json_request(traceId=TRACE_ID.hex().upper())
    parsed = parse_otlp_json(json.dumps(doc)).resource_spans[0].scope_spans[0].spans[0]
    assert parsed.trace_id == TRACE_ID


def test_parse_otlp_json_ignores_unknown_fields() -> None:
    doc = _json_request(someFutureField={"x": 1}, droppedEventsCount=3)
    doc["unknownTopLevel"] = True
    doc["resourceSpans"][0]["schemaUrlFromTheFuture"] = "x"
    parsed = parse_otlp_json(json.dumps(doc).encode()).resource_spans[0].scope_spans[0].spans[0]
    assert parsed.span_id == SPAN_ID
    assert parsed.dropped_events_count == 3


def test_parse_otlp_json_empty_request() -> None:
    assert parse_otlp_json(b"{}") == ExportTraceServiceRequest()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"{not json", "invalid JSON", id="invalid-json"),
        pytest.param(b"[1, 2]", "expected a JSON object with resourceSpans", id="array"),
        pytest.param(b'"text"', "expected a JSON object with resourceSpans", id="string"),
        pytest.param(json.dumps(_json_request(traceId="zz" * 16)).encode(), "traceId 'zz", id="non-hex-trace-id"),
        pytest.param(json.dumps(_json_request(spanId="abc")).encode(), "spanId 'abc' is not hex", id="odd-hex"),
        pytest.param(
            json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "kind": "NOPE"}]}]}]}).encode(),
            "not an OTLP/JSON trace request",
            id="wrong-field-types",
        ),
        pytest.param({"resourceSpans": 3}, "not an OTLP/JSON trace request", id="resource-spans-not-list"),
        pytest.param({"resourceSpans": [3]}, "not an OTLP/JSON trace request", id="resource-spans-item-not-object"),
        pytest.param({"resourceSpans": [{"scopeSpans": "x"}]}, "not an OTLP/JSON trace request", id="scope-spans-str"),
        pytest.param(
            {"resourceSpans": [{"scopeSpans": [{"spans": [1]}]}]}, "not an OTLP/JSON trace request", id="span-not-object"
        ),
        pytest.param(
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"links": 5}]}]}]},
            "not an OTLP/JSON trace request",
            id="links-not-list",
        ),
        pytest.param(
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]},
            "not an OTLP/JSON trace request",
            id="trace-id-not-string",
        ),
    ],
)
def test_parse_otlp_json_errors(data: bytes | dict, message: str) -> None:
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_otlp_json(data)


def test_parse_request_json_lines() -> None:
    first = _json_request(name="one")
    second = _json_request(name="two", spanId="0102030405060708")
    data = (json.dumps(first) + "\n\n" + json.dumps(second) + "\n").encode()
    requests = parse_request(data)
    assert [r.resource_spans[0].scope_spans[0].spans[0].name for r in requests] == ["one", "two"]
    assert requests[1].resource_spans[0].scope_spans[0].spans[0].span_id == bytes.fromhex("0102030405060708")


def test_parse_request_pretty_printed_json_is_one_request() -> None:
    data = json.dumps(_json_request(), indent=2).encode()
    requests = parse_request(b"  \n" + data)
    assert len(requests) == 1
    assert requests[0].resource_spans[0].scope_spans[0].spans[0].span_id == SPAN_ID


def test_parse_request_binary_protobuf() -> None:
    original = request(span("bin", {"a.b": 1}, parent_span_id=b"\x01" * 8), resource={"service.name": "svc"})
    requests = parse_request(original.SerializeToString())
    assert requests == [original]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"\xff\xff\xff", "neither OTLP/JSON nor a binary protobuf", id="garbage-bytes"),
        pytest.param(b"hello world", "neither OTLP/JSON nor a binary protobuf", id="garbage-text"),
        pytest.param(b"{not json", "invalid JSON", id="broken-json-one-line"),
        pytest.param(b'{"resourceSpans": []}\n{broken', "invalid JSON", id="broken-json-lines"),
    ],
)
def test_parse_request_garbage(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_request(data)


@pytest.mark.parametrize("neighbour", [{}, {"other.0.k": "v"}], ids=["alone", "beside-indexed-keys"])
def test_json_content_is_kept_as_sent_whatever_its_neighbours(neighbour):
    # Only dicts built from dotted keys become lists; a JSON object with keys "0", "1" stays an object.
    tree = attribute_tree(attrs({"payload": '{"0": "a", "1": "b"}', **neighbour}), plain_sanitizer())
    assert tree["payload"] == {"0": "a", "1": "b"}
