"""Span -> call (otel_bridge.mapping): one test or case per rule of map_span / map_request.

Every call these tests produce is also validated against proto/calls-complete.schema.json.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from spans import END, SPAN_ID, START, TRACE_ID, decoded_span, request, span

import otel_bridge.mapping.request as request_module
from otel_bridge.project import PROJECT_FORM
from otel_bridge.errors import RejectedSpan
from otel_bridge.decode.limits import DEFAULT_LIMITS
from otel_bridge.mapping import DEFAULT_RULES, NO_PROJECT, map_span
from otel_bridge.pipeline import map_request
from otel_bridge.decode.otlp import CONFLICT_KEY
from otel_bridge.decode.redact import DEFAULT_REDACTION
from otel_bridge.decode.sanitize import Sanitizer

PROJECT = "my-entity/my-project"
SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "proto" / "calls-complete.schema.json").read_text())
_FORMATS = FormatChecker()
assert "date-time" in _FORMATS.checkers, "install rfc3339-validator so date-time is really checked"
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=_FORMATS)
HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
OTHER_SPAN_ID = bytes.fromhex("0a0b0c0d0e0f1011")


# --- helpers --------------------------------------------------------------------------------------------------


def assert_valid_calls(calls: list[dict[str, Any]]) -> None:
    """The calls, serialized as the exporter sends them, form a valid calls/complete request body."""
    body = orjson.loads(orjson.dumps({"batch": calls}))
    errors = sorted(VALIDATOR.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def call_of(sp: Span, *, project_id: str = PROJECT, resource: dict | None = None, scope: dict | None = None) -> dict:
    call = map_span(
        decoded_span(sp, Sanitizer(DEFAULT_LIMITS, DEFAULT_REDACTION)),
        project_id=project_id,
        resource=resource if resource is not None else {"attributes": {}, "dropped_attributes_count": 0},
        scope=scope if scope is not None else {"name": "s", "version": "1", "attributes": {}, "dropped_attributes_count": 0},
        rules=DEFAULT_RULES,
    )
    assert_valid_calls([call])
    return call


def mapped(req: ExportTraceServiceRequest, *, header: str | None = None, default: str = PROJECT):
    result = map_request(
        req.SerializeToString(),
        header_project=header,
        default_project=default,
        rules=DEFAULT_RULES,
        limits=DEFAULT_LIMITS,
        redaction=DEFAULT_REDACTION,
    )
    for calls in result.calls.values():
        assert_valid_calls([orjson.loads(c) for c in calls])
    return result


def calls_by_project(result) -> dict[str, list[dict]]:
    return {project: [orjson.loads(c) for c in calls] for project, calls in result.calls.items()}


def iso_of(unix_nano: int) -> str:
    return (EPOCH + timedelta(microseconds=unix_nano // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ns_of(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def span_ids(n: int) -> list[bytes]:
    return [(i + 1).to_bytes(8, "big") for i in range(n)]


def test_schema_helper_catches_bad_calls() -> None:
    """The helper itself must be able to fail."""
    good = call_of(span())
    for bad in (
        {**good, "id": good["id"].upper()},
        {**good, "op_name": "x" * 129},
        {**good, "started_at": "yesterday"},
        {**good, "project_id": "no-slash"},
        {k: v for k, v in good.items() if k != "summary"},
    ):
        with pytest.raises(AssertionError):
            assert_valid_calls([bad])


# --- ids ------------------------------------------------------------------------------------------------------


def test_ids_are_lowercase_hex() -> None:
    trace_id = bytes.fromhex("ABCDEF0123456789ABCDEF0123456789")
    span_id = bytes.fromhex("ABCDEF0123456789")
    parent = bytes.fromhex("FEDCBA9876543210")
    call = call_of(span(trace_id=trace_id, span_id=span_id, parent_span_id=parent))
    assert call["trace_id"] == "abcdef0123456789abcdef0123456789"
    assert call["id"] == "abcdef0123456789"
    assert call["parent_id"] == "fedcba9876543210"
    assert HEX32.match(call["trace_id"]) and HEX16.match(call["id"]) and HEX16.match(call["parent_id"])
    assert call["project_id"] == PROJECT


@pytest.mark.parametrize("parent", [b"", b"\x00" * 8], ids=["empty", "all-zero"])
def test_parent_null(parent: bytes) -> None:
    call = call_of(span(parent_span_id=parent))
    assert call["parent_id"] is None
    assert call["otel_dump"]["parent_id"] is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"trace_id": b"\x01" * 8}, "invalid trace_id", id="trace-8-bytes"),
        pytest.param({"trace_id": b"\x01" * 17}, "invalid trace_id", id="trace-17-bytes"),
        pytest.param({"trace_id": b""}, "invalid trace_id", id="trace-empty"),
        pytest.param({"trace_id": b"\x00" * 16}, "invalid trace_id", id="trace-all-zero"),
        pytest.param({"span_id": b"\x01" * 4}, "invalid span_id", id="span-4-bytes"),
        pytest.param({"span_id": b"\x01" * 16}, "invalid span_id", id="span-16-bytes"),
        pytest.param({"span_id": b""}, "invalid span_id", id="span-empty"),
        pytest.param({"span_id": b"\x00" * 8}, "invalid span_id", id="span-all-zero"),
        pytest.param({"parent_span_id": b"\x01" * 4}, "invalid parent_span_id", id="parent-4-bytes"),
        pytest.param({"parent_span_id": b"\x01" * 16}, "invalid parent_span_id", id="parent-16-bytes"),
        pytest.param({"start": 0}, "start_time_unix_nano is missing", id="no-start"),
        pytest.param({"end": 0}, "end_time_unix_nano is missing", id="no-end"),
    ],
)
def test_invalid_span_rejected(fields: dict, reason: str) -> None:
    with pytest.raises(RejectedSpan, match=reason):
        call_of(span(**fields))
    # through map_request: rejected alone, with the reason, beside a good span
    bad = span("bad", **{"span_id": OTHER_SPAN_ID, **fields})
    result = mapped(request(span("good"), bad))
    assert (result.spans, result.rejected, result.accepted) == (2, 1, 1)
    assert [c["op_name"] for c in calls_by_project(result)[PROJECT]] == ["good"]
    assert len(result.reasons) == 1 and reason in result.reasons[0]
    assert result.reasons[0].startswith(f"span {bad.span_id.hex() or '(no id)'}: ")
    assert result.error_message() == f"rejected 1 of 2 spans: {result.reasons[0]}"


# --- times ----------------------------------------------------------------------------------------------------


def test_times_from_span() -> None:
    call = call_of(span())
    assert call["started_at"] == iso_of(START) == "2026-01-01T00:00:00.123456Z"
    assert call["ended_at"] == iso_of(END) == "2026-01-01T00:00:01.623456Z"
    assert call["summary"]["weave"]["latency_ms"] == 1500


def test_end_before_start_is_clamped_but_dump_keeps_original() -> None:
    end = START - 5_000_000_000
    call = call_of(span(end=end))
    assert call["started_at"] == iso_of(START)
    assert call["ended_at"] == call["started_at"]
    assert call["summary"]["weave"]["latency_ms"] == 0
    dump = call["otel_dump"]
    assert dump["start_time_unix_nano"] == START and dump["end_time_unix_nano"] == end
    assert dump["start_time"] == iso_of(START) and dump["end_time"] == iso_of(end)


@pytest.mark.parametrize(
    ("attributes", "expected_start", "expected_end"),
    [
        pytest.param(
            {"langfuse.startTime": "2025-12-31T23:59:59.5Z"},
            ns_of(datetime(2025, 12, 31, 23, 59, 59, 500_000, tzinfo=timezone.utc)),
            END,
            id="start-iso-z",
        ),
        pytest.param(
            {"langfuse.startTime": "2026-01-01T01:00:00.25+01:00"},
            ns_of(datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=timezone.utc)),
            END,
            id="start-iso-offset",
        ),
        pytest.param(
            {"langfuse.endTime": "2026-01-01T00:00:03.000001-00:30"},
            START,
            ns_of(datetime(2026, 1, 1, 0, 30, 3, 1, tzinfo=timezone.utc)),
            id="end-iso-negative-offset",
        ),
        pytest.param({"langfuse.startTime": START - 7_000}, START - 7_000, END, id="start-int-ns"),
        pytest.param({"langfuse.endTime": END + 2_000_000_000}, START, END + 2_000_000_000, id="end-int-ns"),
        pytest.param(
            {"langfuse.startTime": START - 1_000_000_000, "langfuse.endTime": "2026-01-01T00:00:10Z"},
            START - 1_000_000_000,
            ns_of(datetime(2026, 1, 1, 0, 0, 10, tzinfo=timezone.utc)),
            id="both",
        ),
        pytest.param({"langfuse.startTime": "not a time"}, START, END, id="unparsable-ignored"),
        # Epoch numbers by magnitude, int or float, start and end alike (Weave's try_parse_timestamp: float s)
        pytest.param({"langfuse.endTime": 1_767_225_605.5}, START, 1_767_225_605_500_000_000, id="end-float-s"),
        pytest.param({"langfuse.startTime": (START - 5_000_000_000) // 1_000_000_000}, (START - 5_000_000_000) // 10**9 * 10**9,
                     END, id="start-int-s"),
        pytest.param({"langfuse.startTime": (START - 7_000_000) // 1_000_000}, (START - 7_000_000) // 10**6 * 10**6, END,
                     id="start-int-ms"),
        pytest.param({"langfuse.endTime": (END + 3_000) // 1_000}, START, (END + 3_000) // 1000 * 1000, id="end-int-us"),
        pytest.param({"langfuse.startTime": (START - 10**9) / 1e3}, START - 10**9, END, id="start-float-ms"),
        pytest.param(  # the case of issue 18: ns start, float seconds end
            {"langfuse.startTime": 1_672_531_200_000_000_000, "langfuse.endTime": 1_748_736_000.0},
            1_672_531_200_000_000_000, 1_748_736_000_000_000_000, id="start-ns-end-float-s",
        ),
        pytest.param({"langfuse.startTime": END + 10**9}, START, END, id="start-after-end-refused"),
        pytest.param({"langfuse.endTime": (START - 10**9) / 1e9}, START, END, id="end-before-start-refused"),
        pytest.param({"langfuse.startTime": -5}, START, END, id="negative-ignored"),
        pytest.param({"langfuse.startTime": True}, START, END, id="bool-ignored"),
    ],
)
def test_langfuse_time_overrides(attributes: dict, expected_start: int, expected_end: int) -> None:
    call = call_of(span(attributes=attributes))
    assert call["started_at"] == iso_of(expected_start)
    assert call["ended_at"] == iso_of(expected_end)
    assert call["summary"]["weave"]["latency_ms"] == (expected_end - expected_start) // 1_000_000
    # the dump keeps the span's own times
    assert call["otel_dump"]["start_time_unix_nano"] == START
    assert call["otel_dump"]["end_time_unix_nano"] == END


@pytest.mark.parametrize(
    "attributes",
    [{"langfuse.startTime": "not a time"}, {"langfuse.endTime": {"a": 1}}, {"langfuse.startTime": END + 10**9}],
    ids=["unreadable", "not-a-time", "ends-before-start"],
)
def test_override_times_not_applied_are_a_warning(attributes: dict) -> None:
    result = map_request(request(span(attributes=attributes)).SerializeToString(), header_project=None,
                         default_project="e/p", rules=DEFAULT_RULES, limits=DEFAULT_LIMITS, redaction=DEFAULT_REDACTION)
    assert result.rejected == 0 and result.value_warnings == {"override_time": 1}
    assert "1 override times (started_at/ended_at) not applied" in result.error_message()


# --- op_name / display_name -----------------------------------------------------------------------------------


def _shortened(name: str) -> str:
    return name[:123] + ":" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:4]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("chat gpt-4o", "chat gpt-4o", id="short"),
        pytest.param("a" * 127, "a" * 127, id="127"),
        pytest.param("a" * 128, "a" * 128, id="128-kept"),
        pytest.param("a" * 129, _shortened("a" * 129), id="129-shortened"),
        pytest.param("b" * 500, _shortened("b" * 500), id="500-shortened"),
        pytest.param("é" * 200, _shortened("é" * 200), id="non-ascii"),
        pytest.param("", "unnamed_span", id="empty"),
    ],
)
def test_op_name(name: str, expected: str) -> None:
    call = call_of(span(name))
    assert call["op_name"] == expected
    assert len(call["op_name"]) <= 128
    assert call["summary"]["weave"]["trace_name"] == expected
    assert call["otel_dump"]["name"] == name  # the dump keeps the name as sent
    if len(name) > 128:
        assert len(call["op_name"]) == 128
        assert call["op_name"][-5] == ":"
        assert call["op_name"].startswith(name[:123])


def test_op_name_hash_tells_long_names_apart() -> None:
    a = call_of(span("x" * 200 + "a"))["op_name"]
    b = call_of(span("x" * 200 + "b"))["op_name"]
    assert a != b and a[:123] == b[:123]


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param({}, None, id="absent"),
        pytest.param({"wandb.display_name": ""}, None, id="empty"),
        pytest.param({"wandb.display_name": "My call"}, "My call", id="set"),
        pytest.param({"wandb.display_name": "d" * 1024}, "d" * 1024, id="1024-kept"),
        pytest.param({"wandb.display_name": "d" * 1025}, "d" * 1021 + "...", id="1025-shortened"),
        pytest.param({"wandb.display_name": "e" * 5000}, "e" * 1021 + "...", id="5000-shortened"),
    ],
)
def test_display_name(attributes: dict, expected: str | None) -> None:
    call = call_of(span(attributes=attributes))
    assert call.get("display_name") == expected
    if expected is None:
        assert "display_name" not in call
    else:
        assert len(call["display_name"]) <= 1024


# --- inputs / output ------------------------------------------------------------------------------------------

INPUT_KEYS = [
    "ai.prompt",
    "gen_ai.prompt",
    "input.value",
    "mlflow.spanInputs",
    "gen_ai.input.messages",
    "pydantic_ai.all_messages",
    "traceloop.entity.input",
    "gcp.vertex.agent.tool_call_args",
    "gcp.vertex.agent.llm_request",
    "input",
    "inputs",
]
OUTPUT_KEYS = [
    "ai.response",
    "gen_ai.completion",
    "output.value",
    "gen_ai.output.messages",
    "mlflow.spanOutputs",
    "final_result",
    "gen_ai.content.completion",
    "traceloop.entity.output",
    "gcp.vertex.agent.tool_response",
    "gcp.vertex.agent.llm_response",
    "output",
    "outputs",
]


def test_rule_tables_start_with_the_reference_lists() -> None:
    # Weave's keys first and in its order: a span Weave's ingestion reads gets the same inputs/output.
    assert [key for key, _ in DEFAULT_RULES.inputs][: len(INPUT_KEYS)] == INPUT_KEYS
    assert [key for key, _ in DEFAULT_RULES.output][: len(OUTPUT_KEYS)] == OUTPUT_KEYS


@pytest.mark.parametrize("index", range(len(INPUT_KEYS)), ids=INPUT_KEYS)
@pytest.mark.parametrize("empty", ["", []], ids=["empty-str-before", "empty-list-before"])
def test_inputs_priority(index: int, empty: Any) -> None:
    """The key at `index` wins over every later key, and an empty earlier key is skipped."""
    attributes: dict[str, Any] = {key: f"in:{key}" for key in INPUT_KEYS[index:]}
    if index:
        attributes[INPUT_KEYS[index - 1]] = empty
    key = INPUT_KEYS[index]
    call = call_of(span(attributes=attributes))
    assert call["inputs"] == {key: f"in:{key}"}  # strings are never unwrapped, even from input/inputs


@pytest.mark.parametrize("index", range(len(OUTPUT_KEYS)), ids=OUTPUT_KEYS)
@pytest.mark.parametrize("empty", ["", []], ids=["empty-str-before", "empty-list-before"])
def test_output_priority(index: int, empty: Any) -> None:
    attributes: dict[str, Any] = {key: f"out:{key}" for key in OUTPUT_KEYS[index:]}
    if index:
        attributes[OUTPUT_KEYS[index - 1]] = empty
    key = OUTPUT_KEYS[index]
    call = call_of(span(attributes=attributes))
    if key in ("output", "outputs"):
        assert call["output"] == f"out:{key}"  # unwrapped whatever the type
    else:
        assert call["output"] == {key: f"out:{key}"}


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param({}, {}, id="nothing"),
        pytest.param({"input": '{"q": "hi", "n": 2}'}, {"q": "hi", "n": 2}, id="input-json-dict-unwrapped"),
        pytest.param({"inputs": {"q": "hi"}}, {"q": "hi"}, id="inputs-kvlist-unwrapped"),
        pytest.param({"input.q": "hi", "input.n": 2}, {"q": "hi", "n": 2}, id="input-dotted-unwrapped"),
        pytest.param({"input": "hi"}, {"input": "hi"}, id="input-str-not-unwrapped"),
        pytest.param({"input": "[1, 2]"}, {"input": [1, 2]}, id="input-list-not-unwrapped"),
        pytest.param({"inputs": 5}, {"inputs": 5}, id="inputs-int-not-unwrapped"),
        pytest.param({"input.value": '{"q": "hi"}'}, {"input.value": {"q": "hi"}}, id="other-keys-never-unwrapped"),
        pytest.param(
            {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hi", "gen_ai.prompt.1.role": "assistant",
             "gen_ai.prompt.1.content": "hello"},
            {"gen_ai.prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            id="indexed-keys-to-list",
        ),
        pytest.param(
            {"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]'},
            {"gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]},
            id="json-messages-parsed",
        ),
        pytest.param({"input": 0, "inputs": "x"}, {"inputs": "x"}, id="zero-is-not-truthy"),
        pytest.param({"input": {}}, {}, id="empty-dict-skipped"),
    ],
)
def test_inputs_shapes(attributes: dict, expected: Any) -> None:
    assert call_of(span(attributes=attributes))["inputs"] == expected


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param({}, {}, id="nothing"),
        pytest.param({"output": "text"}, "text", id="output-str-unwrapped"),
        pytest.param({"outputs": '{"a": 1}'}, {"a": 1}, id="outputs-dict-unwrapped"),
        pytest.param({"output": "[1, 2]"}, [1, 2], id="output-list-unwrapped"),
        pytest.param({"output": 7}, 7, id="output-int-unwrapped"),
        pytest.param({"output.a": 1}, {"a": 1}, id="output-dotted-unwrapped"),
        pytest.param({"output.value": "text"}, {"output.value": "text"}, id="output-value-kept-under-key"),
        pytest.param(
            {"gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "hi"},
            {"gen_ai.completion": [{"role": "assistant", "content": "hi"}]},
            id="indexed-keys-to-list",
        ),
    ],
)
def test_output_shapes(attributes: dict, expected: Any) -> None:
    assert call_of(span(attributes=attributes))["output"] == expected


# OpenLLMetry's OpenAI instrumentation writes each choice flattened, a tool call per index
# (gen_ai.completion.0.tool_calls.1.id); a span may also carry gen_ai.completion as JSON text, holding part of it.
_DOTTED_TOOL_CALLS = {
    "gen_ai.completion.0.finish_reason": "tool_calls",
    "gen_ai.completion.0.role": "assistant",
    "gen_ai.completion.0.tool_calls.0.id": "call_0",
    "gen_ai.completion.0.tool_calls.0.name": "get_weather",
    "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Paris"}',
    "gen_ai.completion.0.tool_calls.1.id": "call_1",
    "gen_ai.completion.0.tool_calls.1.name": "get_forecast",
    "gen_ai.completion.0.tool_calls.1.arguments": '{"city": "Paris"}',
}
_JSON_COMPLETION = json.dumps(
    [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "get_weather"}}]}]
)


@pytest.mark.parametrize("json_first", [True, False], ids=["json-then-dotted", "dotted-then-json"])
def test_json_text_and_dotted_sub_keys_merge_losing_no_tool_call(json_first: bool) -> None:
    json_part = {"gen_ai.completion": _JSON_COMPLETION}
    attributes = {**json_part, **_DOTTED_TOOL_CALLS} if json_first else {**_DOTTED_TOOL_CALLS, **json_part}
    call = call_of(span("openai.chat", attributes={"gen_ai.request.model": "gpt-4o", **attributes}))
    (message,) = call["output"]["gen_ai.completion"]
    assert message["role"] == "assistant" and message["finish_reason"] == "tool_calls" and message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather"}, "name": "get_weather",
         "arguments": {"city": "Paris"}},
        {"id": "call_1", "name": "get_forecast", "arguments": {"city": "Paris"}},
    ]
    assert call["otel_dump"]["attributes"]["gen_ai"]["completion"] == [message]


def test_merging_keeps_a_scalar_beside_a_structure_and_the_later_of_two_scalars() -> None:
    call = call_of(span(attributes={
        "output.value": '{"answer": {"text": "sunny"}, "score": 1}',
        "output.value.answer": "cloudy",  # a scalar where the JSON has an object: both kept
        "output.value.score": 2,  # two scalars for one place: the later wins, as for a repeated key
    }))
    assert call["output"] == {"output.value": {"answer": {CONFLICT_KEY: "cloudy", "text": "sunny"}, "score": 2}}


@pytest.mark.parametrize("key", ["gen_ai.prompt", "gen_ai.completion"])
def test_indexed_messages_sent_as_a_kvlist_are_a_list_like_flattened_ones(key: str) -> None:
    messages = {"0": {"role": "user", "content": "hi"}, "1": {"role": "assistant", "content": "hello"}}
    flattened = {f"{key}.{i}.{field}": value for i, message in messages.items() for field, value in message.items()}
    as_kvlist = call_of(span(attributes={key: messages}))
    as_flattened = call_of(span(attributes=flattened))
    field = "inputs" if key == "gen_ai.prompt" else "output"
    assert as_kvlist[field] == as_flattened[field] == {key: [messages["0"], messages["1"]]}
    assert as_kvlist["otel_dump"]["attributes"] == as_flattened["otel_dump"]["attributes"]


@pytest.mark.parametrize(
    ("kvlist", "expected"),
    [
        pytest.param({"1": "b", "0": "a"}, ["a", "b"], id="any-order"),
        pytest.param({"0": "a", "2": "c"}, {"0": "a", "2": "c"}, id="gap-stays-dict"),
        pytest.param({"0": "a", "x": "c"}, {"0": "a", "x": "c"}, id="mixed-keys-stay-dict"),
        pytest.param({}, {}, id="empty-stays-dict"),
        pytest.param({"0": {"0": "a"}}, [["a"]], id="nested"),
    ],
)
def test_kvlist_keyed_by_index_follows_the_flattened_rule(kvlist: dict, expected: Any) -> None:
    assert call_of(span(attributes={"gen_ai.prompt": kvlist}))["otel_dump"]["attributes"]["gen_ai"]["prompt"] == expected


# --- attributes -----------------------------------------------------------------------------------------------

ATTRIBUTE_SOURCES = {
    "system": ["gen_ai.system_instructions", "gen_ai.system", "llm.system"],
    "kind": ["weave.span.kind", "traceloop.span.kind", "openinference.span.kind"],
    "model": ["gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "ai.model.id"],
    "provider": ["gen_ai.provider.name", "llm.provider", "ai.model.provider"],
    "model_parameters": ["gen_ai.request", "llm.invocation_parameters"],
    "operation_name": ["gen_ai.operation.name"],
    "response_id": ["gen_ai.response.id"],
    "finish_reasons": ["gen_ai.response.finish_reasons"],
    "agent_name": ["gen_ai.agent.name"],
    "agent_id": ["gen_ai.agent.id"],
}


def _in_order_within(reference: list[str], keys: list[str]) -> bool:
    positions = [keys.index(key) for key in reference if key in keys]
    return len(positions) == len(reference) and positions == sorted(positions)


def test_attribute_rule_table_keeps_the_reference_order() -> None:
    table = {name: [key for key, _ in sources] for name, sources in DEFAULT_RULES.attributes}
    for name, reference in ATTRIBUTE_SOURCES.items():
        assert _in_order_within(reference, table[name]), name


def _attribute_value(source: str) -> Any:
    if source == "gen_ai.request":
        return {"seed": 7}  # a kvlist: the whole sub-dict is the value
    if source == "llm.invocation_parameters":
        return '{"temperature": 0.2}'
    if source == "gen_ai.response.finish_reasons":
        return ["stop"]
    return f"v:{source}"


def _attribute_expected(source: str) -> Any:
    value = _attribute_value(source)
    return {"temperature": 0.2} if source == "llm.invocation_parameters" else value


@pytest.mark.parametrize(
    ("short_key", "index"),
    [(name, i) for name, sources in ATTRIBUTE_SOURCES.items() for i in range(len(sources))],
    ids=[f"{name}-{source}" for name, sources in ATTRIBUTE_SOURCES.items() for source in sources],
)
def test_attribute_sources_in_priority_order(short_key: str, index: int) -> None:
    sources = ATTRIBUTE_SOURCES[short_key][index:]
    call = call_of(span(attributes={source: _attribute_value(source) for source in sources}))
    assert call["attributes"][short_key] == _attribute_expected(sources[0])


def test_model_response_before_request_and_model_parameters_whole_subdict() -> None:
    call = call_of(
        span(
            attributes={
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.request.temperature": 0.5,
                "gen_ai.request.max_tokens": 100,
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "llm.invocation_parameters": '{"temperature": 1}',
            }
        )
    )
    assert call["attributes"]["model"] == "gpt-4o-2024-08-06"
    assert call["attributes"]["model_parameters"] == {"model": "gpt-4o", "temperature": 0.5, "max_tokens": 100}


def test_attributes_only_recognised_keys() -> None:
    call = call_of(span(attributes={"gen_ai.system": "openai", "http.method": "POST", "input.value": "x"}))
    # gen_ai.system is Weave's `system` and, in the GenAI conventions before v1.37, the provider
    assert call["attributes"] == {"system": "openai", "provider": "openai"}


@pytest.mark.parametrize(
    "custom",
    [{"team": "a", "tier": 2}, '{"team": "a", "tier": 2}'],
    ids=["dict", "json-string"],
)
def test_wandb_attributes_merged(custom: Any) -> None:
    call = call_of(span(attributes={"gen_ai.agent.name": "planner", "wandb.attributes": custom}))
    assert call["attributes"] == {"agent_name": "planner", "team": "a", "tier": 2}


def test_wandb_attributes_dotted_and_alone() -> None:
    call = call_of(span(attributes={"wandb.attributes.team": "a", "other": 1}))
    assert call["attributes"] == {"team": "a"}  # recognised: no fallback to the whole tree


def test_attributes_fall_back_to_whole_tree_when_nothing_recognised() -> None:
    call = call_of(span(attributes={"http.method": "POST", "http.status_code": 200, "db.rows": "[1, 2]"}))
    assert call["attributes"] == {"http": {"method": "POST", "status_code": 200}, "db": {"rows": [1, 2]}}
    assert call["inputs"] == {} and call["output"] == {}


def test_indexed_keys_are_lists_in_attributes_as_everywhere_in_the_call() -> None:
    """Deliberately unlike Weave, which keeps {"0": ..., "1": ...} when it dumps every attribute (see README)."""
    fallback = call_of(span(attributes={"f.0": "a", "f.1": "b"}))
    custom = call_of(span(attributes={"gen_ai.agent.name": "planner", "wandb.attributes.f.0": "a", "wandb.attributes.f.1": "b"}))
    assert fallback["attributes"] == {"f": ["a", "b"]} == fallback["otel_dump"]["attributes"]
    assert custom["attributes"] == {"agent_name": "planner", "f": ["a", "b"]}


@pytest.mark.parametrize(
    "recognised",
    [{"input.value": "q"}, {"output.value": "a"}, {"gen_ai.usage.input_tokens": 3}],
    ids=["inputs", "output", "usage"],
)
def test_no_attribute_fallback_when_inputs_output_or_usage_found(recognised: dict) -> None:
    # As Weave's own ingestion: the whole dict is dumped only when nothing at all was recognised.
    call = call_of(span(attributes={"http.method": "POST", **recognised}))
    assert call["attributes"] == {}


# --- usage ----------------------------------------------------------------------------------------------------

USAGE_SOURCES = {
    "input_tokens": ["gen_ai.usage.input_tokens"],
    "output_tokens": ["gen_ai.usage.output_tokens"],
    "prompt_tokens": ["gen_ai.usage.prompt_tokens", "llm.token_count.prompt", "ai.usage.promptTokens"],
    "completion_tokens": ["gen_ai.usage.completion_tokens", "llm.token_count.completion", "ai.usage.completionTokens"],
    "total_tokens": ["llm.usage.total_tokens", "llm.token_count.total"],
    "cache_creation_input_tokens": ["gen_ai.usage.cache_creation.input_tokens"],
    "cache_read_input_tokens": [
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.prompt_tokens_details.cached_tokens",
        "gen_ai.usage.input_tokens_details.cached_tokens",
        "prompt_tokens_details.cached_tokens",
    ],
}
USAGE_CASES = [(field, source) for field, sources in USAGE_SOURCES.items() for source in sources]


def test_usage_rule_table_starts_with_the_reference_table() -> None:
    table = {name: [key for key, _ in sources] for name, sources in DEFAULT_RULES.usage}
    for field, reference in USAGE_SOURCES.items():
        assert table[field][: len(reference)] == reference, field


@pytest.mark.parametrize(("field", "source"), USAGE_CASES, ids=[s for _, s in USAGE_CASES])
def test_usage_each_source(field: str, source: str) -> None:
    call = call_of(span(attributes={source: 17}))
    assert call["summary"]["usage"] == {"usage": {field: 17, "requests": 1}}


@pytest.mark.parametrize("field", [f for f, s in USAGE_SOURCES.items() if len(s) > 1])
def test_usage_source_priority(field: str) -> None:
    sources = USAGE_SOURCES[field]
    for start in range(len(sources)):
        attributes = {source: 100 + i for i, source in enumerate(sources) if i >= start}
        call = call_of(span(attributes=attributes))
        assert call["summary"]["usage"]["usage"][field] == 100 + start


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param(
            {"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0},
            {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
            id="zero-kept",
        ),
        pytest.param({"gen_ai.usage.prompt_tokens": 0, "llm.token_count.prompt": 9}, {"prompt_tokens": 0},
                     id="zero-wins-over-later-source"),
        pytest.param({"gen_ai.usage.input_tokens": "12"}, {"input_tokens": 12}, id="string-parsed"),
        pytest.param({"gen_ai.usage.input_tokens": " 12 "}, None, id="string-with-spaces-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": -3}, None, id="negative-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": -3.0}, None, id="negative-float-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": "-3"}, None, id="negative-string-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": "1_000"}, None, id="underscores-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": "+7"}, None, id="sign-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": "\u0661\u0662"}, None, id="non-ascii-digits-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": -1, "llm.token_count.prompt": 4}, {"prompt_tokens": 4},
                     id="negative-falls-through"),
        pytest.param({"gen_ai.usage.input_tokens": 12.0}, {"input_tokens": 12}, id="integral-float-parsed"),
        pytest.param({"gen_ai.usage.prompt_tokens": "abc", "llm.token_count.prompt": 5}, {"prompt_tokens": 5},
                     id="non-numeric-falls-through"),
        pytest.param({"gen_ai.usage.input_tokens": 12.5}, None, id="fractional-float-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": "abc"}, None, id="non-numeric-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": True}, None, id="bool-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": [3]}, None, id="list-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": float("nan")}, None, id="nan-ignored"),
        pytest.param(
            {"gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 20},
            {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
            id="total-from-prompt-completion",
        ),
        pytest.param(
            {"gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 4},
            {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            id="total-from-input-output",
        ),
        pytest.param(
            {"gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 20,
             "gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 2},
            {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            id="both-spellings-reported-once",  # Weave adds prompt_tokens to input_tokens
        ),
        pytest.param(
            {"gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 2, "llm.usage.total_tokens": 100},
            {"input_tokens": 1, "output_tokens": 2, "total_tokens": 100},
            id="explicit-total-kept",
        ),
        pytest.param(
            {"llm.token_count.prompt": 1, "llm.token_count.completion": 2, "llm.token_count.total": 0},
            {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 0},
            id="explicit-zero-total-kept",
        ),
        pytest.param(
            {"gen_ai.usage.input_tokens": 5, "gen_ai.usage.completion_tokens": 6},
            {"input_tokens": 5, "completion_tokens": 6},
            id="mixed-pair-no-total",
        ),
        pytest.param(
            {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.input_tokens.cached": 20,
             "gen_ai.usage.output_tokens": 5, "gen_ai.usage.output_tokens.reasoning": 2},
            {"input_tokens": 100, "output_tokens": 5, "total_tokens": 105, "cache_read_input_tokens": 20,
             "reasoning_tokens": 2},
            id="scalar-beside-sub-keys-sentry",
        ),
        pytest.param({}, None, id="none"),
        pytest.param({"gen_ai.usage.details.foo": 3}, None, id="unknown-spelling-ignored"),
    ],
)
def test_usage_values(attributes: dict, expected: dict | None) -> None:
    call = call_of(span(attributes=attributes))
    if expected is None:
        assert "usage" not in call["summary"]
    else:
        assert call["summary"]["usage"] == {"usage": {**expected, "requests": 1}}


@pytest.mark.parametrize(
    ("attributes", "expected_warning"),
    [
        pytest.param({"gen_ai.usage.input_tokens": -3}, "1 token counts that are not non-negative integers", id="negative"),
        pytest.param({"gen_ai.usage.input_tokens": "1_000"}, "1 token counts", id="underscores"),
        pytest.param({"gen_ai.request.model": {"a": 1}, "gen_ai.usage.input_tokens": 2},
                     "1 model names that are not strings", id="dict-model"),
    ],
)
def test_values_that_are_not_counts_or_names_are_warned_about_and_kept_in_otel_dump(attributes: dict, expected_warning: str) -> None:
    result = map_request(request(span(attributes=attributes)).SerializeToString(), header_project=None,
                         default_project="e/p", rules=DEFAULT_RULES, limits=DEFAULT_LIMITS, redaction=DEFAULT_REDACTION)
    assert result.rejected == 0
    assert expected_warning in result.error_message()
    (call,) = [orjson.loads(c) for c in result.calls["e/p"]]
    assert "{'a': 1}" not in json.dumps(call["summary"])
    assert list(call["summary"].get("usage", {"usage": None})) == ["usage"]
    assert call["otel_dump"]["attributes"]["gen_ai"]["usage"]["input_tokens"] == attributes["gen_ai.usage.input_tokens"]


@pytest.mark.parametrize(
    ("attributes", "key"),
    [
        pytest.param({"gen_ai.response.model": "m-resp", "gen_ai.request.model": "m-req"}, "m-resp", id="response"),
        pytest.param({"gen_ai.request.model": "m-req"}, "m-req", id="request"),
        pytest.param({"llm.model_name": "m-oi"}, "m-oi", id="openinference"),
        pytest.param({"llm.invocation_parameters": '{"model": "m-params"}'}, "m-params", id="model-parameters"),
        pytest.param({"ai.model.id": 42}, "42", id="non-string-model"),
        pytest.param({"llm.invocation_parameters": '{"temperature": 1}'}, "usage", id="parameters-without-model"),
        pytest.param({}, "usage", id="no-model"),
    ],
)
def test_usage_key(attributes: dict, key: str) -> None:
    call = call_of(span(attributes={**attributes, "gen_ai.usage.input_tokens": 1}))
    assert call["summary"]["usage"] == {key: {"input_tokens": 1, "requests": 1}}


# --- exception / status ---------------------------------------------------------------------------------------

ERROR = Status.STATUS_CODE_ERROR


@pytest.mark.parametrize(
    ("message", "events", "attributes", "expected"),
    [
        pytest.param("boom", [], {}, "boom", id="status-message"),
        pytest.param(
            "boom",
            [("exception", {"exception.type": "ValueError", "exception.message": "bad"})],
            {"error.type": "timeout"},
            "boom",
            id="status-message-wins",
        ),
        pytest.param(
            "",
            [("exception", {"exception.type": "ValueError", "exception.message": "bad", "exception.stacktrace": "..."})],
            {},
            "ValueError: bad",
            id="event-type-and-message",
        ),
        pytest.param("", [("exception", {"exception.type": "ValueError"})], {}, "ValueError", id="event-type-only"),
        pytest.param("", [("exception", {"exception.message": "bad"})], {}, "bad", id="event-message-only"),
        pytest.param(
            "",
            [("log", {"exception.message": "not an exception event"}), ("exception", {"exception.type": "KeyError"})],
            {},
            "KeyError",
            id="only-exception-events-read",
        ),
        pytest.param(
            "", [("exception", {"exception.stacktrace": "..."})], {"error.type": "timeout"}, "timeout",
            id="empty-event-then-error-type",
        ),
        pytest.param("", [], {"error.type": "timeout"}, "timeout", id="error-type-attribute"),
        pytest.param("", [], {}, "error", id="nothing"),
        # exception_details: the error's text where a code is all the status and error.type say.
        pytest.param(
            "TOOL_ERROR", [], {"error.type": "TOOL_ERROR", "gen_ai.tool.call.result": '{"error": "service down"}'},
            'TOOL_ERROR: {"error":"service down"}', id="detail-after-status-code",  # Google ADK
        ),
        pytest.param(
            "", [], {"error.type": "tool_error", "anthropic.tool_result.content": '[{"type":"text","text":"down"}]'},
            'tool_error: [{"type":"text","text":"down"}]', id="detail-after-error-type",  # anthropic >= 2
        ),
        pytest.param("", [], {"gen_ai.tool.call.result": "down"}, "down", id="detail-alone"),
        pytest.param("service down", [], {"gen_ai.tool.call.result": "down"}, "service down", id="detail-already-said"),
        pytest.param(
            "", [("exception", {"exception.type": "ValueError", "exception.message": "bad"})],
            {"gen_ai.tool.call.result": "other"}, "ValueError: bad", id="exception-event-before-detail",
        ),
    ],
)
def test_exception_for_error_spans(message: str, events: list, attributes: dict, expected: str) -> None:
    call = call_of(span(attributes=attributes, status_code=ERROR, status_message=message, events=events))
    assert call["exception"] == expected
    assert call["summary"]["weave"]["status"] == "error"


@pytest.mark.parametrize("code", [Status.STATUS_CODE_UNSET, Status.STATUS_CODE_OK], ids=["unset", "ok"])
def test_non_error_spans_never_get_an_exception(code: int) -> None:
    call = call_of(
        span(
            attributes={"error.type": "timeout"},
            status_code=code,
            status_message="ignored",
            events=[("exception", {"exception.type": "ValueError", "exception.message": "bad"})],
        )
    )
    assert call["exception"] is None
    assert call["summary"]["weave"]["status"] == "success"


def test_summary_weave() -> None:
    call = call_of(span("my op", status_code=ERROR, status_message="x", start=START, end=START + 2_345_678_901))
    assert call["summary"]["weave"] == {"status": "error", "latency_ms": 2345, "trace_name": "my op"}


# --- thread / turn --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "thread_id", "is_turn"),
    [
        pytest.param({}, None, False, id="none"),
        pytest.param({"gen_ai.conversation.id": "conv-1"}, "conv-1", True, id="conversation-id"),
        pytest.param({"gcp.vertex.agent.session_id": "sess-1"}, "sess-1", True, id="adk-session"),
        pytest.param({"wandb.thread_id": "thr-1"}, "thr-1", False, id="wandb-thread-not-a-turn"),
        pytest.param({"wandb.thread_id": "thr-1", "wandb.is_turn": True}, "thr-1", True, id="wandb-thread-is-turn"),
        pytest.param({"wandb.thread_id": "thr-1", "wandb.is_turn": False}, "thr-1", False, id="wandb-is-turn-false"),
        pytest.param(
            {"gen_ai.conversation.id": "conv-1", "wandb.is_turn": False}, "conv-1", False, id="explicit-false-wins"
        ),
        pytest.param(
            {"gen_ai.conversation.id": "conv-1", "gcp.vertex.agent.session_id": "s", "wandb.thread_id": "t"},
            "conv-1",
            True,
            id="priority-conversation-first",
        ),
        pytest.param(
            {"gcp.vertex.agent.session_id": "s", "wandb.thread_id": "t"}, "s", True, id="priority-adk-before-wandb"
        ),
        pytest.param({"gen_ai.conversation.id": 12345}, "12345", True, id="numeric-id-as-string"),
        pytest.param({"wandb.is_turn": True}, None, False, id="turn-without-thread"),
        pytest.param(
            {"gen_ai.conversation.id": "conv-1", "wandb.is_turn": "false"}, "conv-1", False, id="string-false-wins"
        ),
        pytest.param({"wandb.thread_id": "thr-1", "wandb.is_turn": "True"}, "thr-1", True, id="string-true"),
    ],
)
def test_thread_and_turn(attributes: dict, thread_id: str | None, is_turn: bool) -> None:
    call = call_of(span(attributes=attributes))
    assert call.get("thread_id") == thread_id
    if is_turn:
        assert call["turn_id"] == SPAN_ID.hex() == call["id"]
    else:
        assert "turn_id" not in call


# --- wb_run_id / steps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param({}, {}, id="none"),
        pytest.param({"wandb.wb_run_id": "abc123"}, {"wb_run_id": f"{PROJECT}/abc123"}, id="bare-run-id-qualified"),
        pytest.param({"wandb.wb_run_id": "ent/proj/abc123"}, {"wb_run_id": "ent/proj/abc123"}, id="qualified-kept"),
        pytest.param({"wandb.wb_run_step": 0}, {"wb_run_step": 0}, id="step-zero-kept"),
        pytest.param({"wandb.wb_run_step": 5, "wandb.wb_run_step_end": 9}, {"wb_run_step": 5, "wb_run_step_end": 9},
                     id="step-and-end"),
        pytest.param({"wandb.wb_run_step_end": 0}, {"wb_run_step_end": 0}, id="step-end-zero-kept"),
        pytest.param({"wandb.wb_run_step": "3"}, {"wb_run_step": 3}, id="step-string-parsed"),
        pytest.param({"wandb.wb_run_step": "x"}, {}, id="step-non-numeric-dropped"),
    ],
)
def test_wb_run(attributes: dict, expected: dict) -> None:
    call = call_of(span(attributes=attributes))
    assert {k: call[k] for k in ("wb_run_id", "wb_run_step", "wb_run_step_end") if k in call} == expected


# --- otel_dump ------------------------------------------------------------------------------------------------


def test_otel_dump() -> None:
    link_trace, link_span = bytes.fromhex("AA" * 16), bytes.fromhex("BB" * 8)
    sp = span(
        "tool call",
        {"a.b": 1, "c": '{"d": [1]}', "gen_ai.request.model": "m"},
        parent_span_id=bytes.fromhex("1122334455667788"),
        kind=Span.SPAN_KIND_SERVER,
        status_code=ERROR,
        status_message="boom",
        events=[("exception", {"exception.type": "E", "x.y": 2})],
        links=[(link_trace, link_span, {"l.k": "v"})],
    )
    sp.trace_state = "vendor=1"
    sp.flags = 257
    sp.dropped_attributes_count = 3
    sp.dropped_events_count = 4
    sp.dropped_links_count = 5
    sp.links[0].flags = 1
    sp.links[0].trace_state = "lk=1"
    sp.events[0].dropped_attributes_count = 6
    req = request(sp, resource={"service.name": "svc", "wandb.entity": "e", "wandb.project": "p"}, scope=("sc", "2.0"))
    req.resource_spans[0].resource.dropped_attributes_count = 7
    [call] = calls_by_project(mapped(req))["e/p"]
    assert call["otel_dump"] == {
        "name": "tool call",
        "context": {"trace_id": TRACE_ID.hex(), "span_id": SPAN_ID.hex(), "trace_state": "vendor=1"},
        "kind": "SERVER",
        "parent_id": "1122334455667788",
        "start_time": iso_of(START),
        "end_time": iso_of(END),
        "start_time_unix_nano": START,
        "end_time_unix_nano": END,
        "status": {"code": "ERROR", "message": "boom"},
        "attributes": {"a": {"b": 1}, "c": {"d": [1]}, "gen_ai": {"request": {"model": "m"}}},
        "dropped_attributes_count": 3,
        "events": [
            {
                "name": "exception",
                "timestamp": START + 1000,
                "attributes": {"exception": {"type": "E"}, "x": {"y": 2}},
                "dropped_attributes_count": 6,
            }
        ],
        "dropped_events_count": 4,
        "links": [
            {
                "trace_id": "aa" * 16,
                "span_id": "bb" * 8,
                "trace_state": "lk=1",
                "attributes": {"l": {"k": "v"}},
                "dropped_attributes_count": 0,
                "flags": 1,
            }
        ],
        "dropped_links_count": 5,
        "flags": 257,
        "resource": {
            "attributes": {"service": {"name": "svc"}, "wandb": {"entity": "e", "project": "p"}},
            "dropped_attributes_count": 7,
        },
        "scope": {"name": "sc", "version": "2.0", "attributes": {}, "dropped_attributes_count": 0},
    }


@pytest.mark.parametrize(
    ("kind", "name"),
    [(0, "UNSPECIFIED"), (1, "INTERNAL"), (2, "SERVER"), (3, "CLIENT"), (4, "PRODUCER"), (5, "CONSUMER")],
)
def test_otel_dump_kind_names(kind: int, name: str) -> None:
    assert call_of(span(kind=kind))["otel_dump"]["kind"] == name


@pytest.mark.parametrize(("code", "name"), [(0, "UNSET"), (1, "OK"), (2, "ERROR")])
def test_otel_dump_status_names(code: int, name: str) -> None:
    assert call_of(span(status_code=code))["otel_dump"]["status"]["code"] == name


def test_otel_dump_keeps_conflicting_values() -> None:
    call = call_of(span(attributes={"x": 1, "x.y": 2}))
    assert call["otel_dump"]["attributes"] == {"x": {CONFLICT_KEY: 1, "y": 2}}


# --- map_request: routing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "header", "default", "project"),
    [
        pytest.param({"wandb.entity": "re", "wandb.project": "rp"}, "he/hp", "de/dp", "re/rp", id="resource-wins"),
        pytest.param({}, "he/hp", "de/dp", "he/hp", id="header-over-default"),
        pytest.param({}, None, "de/dp", "de/dp", id="default"),
        pytest.param({}, "", "de/dp", "de/dp", id="empty-header-ignored"),
        pytest.param({"wandb.project": "re/rp"}, "he/hp", "de/dp", "re/rp", id="resource-project-qualified-alone"),
        pytest.param({"wandb.entity": "re"}, "he/hp", "", "he/hp", id="resource-entity-alone-ignored"),
        pytest.param({"wandb.entity": "re", "wandb.project": "rp"}, "bad-header", "", "re/rp",
                     id="resource-wins-over-malformed-header"),
    ],
)
def test_routing(resource: dict, header: str | None, default: str, project: str) -> None:
    result = mapped(request(span(), resource=resource), header=header, default=default)
    assert result.rejected == 0
    calls = calls_by_project(result)
    assert list(calls) == [project]
    assert calls[project][0]["project_id"] == project


def test_routing_per_resource() -> None:
    req = request(span("a"), resource={"wandb.entity": "e1", "wandb.project": "p1"})
    req.resource_spans.extend(request(span("b", span_id=OTHER_SPAN_ID)).resource_spans)
    calls = calls_by_project(mapped(req, header="h/p"))
    assert {project: [c["op_name"] for c in cs] for project, cs in calls.items()} == {"e1/p1": ["a"], "h/p": ["b"]}


@pytest.mark.parametrize("default", ["", "de/dp"])
@pytest.mark.parametrize("header", ["no-slash", "a/b/c", "/p", "e/", "my team/p", "e/p#frag", "e/p?x", "e/\x19p", "e%2F/p"])
def test_malformed_header_rejected_naming_the_header(header: str, default: str) -> None:
    # Even with a default project: the client named a project, wrongly; the default would hide that.
    result = mapped(request(span()), header=header, default=default)
    assert (result.spans, result.rejected, result.calls) == (1, 1, {})
    assert result.reasons == [f"span {SPAN_ID.hex()}: header project_id {header!r} is not of the form {PROJECT_FORM}"]


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param({"wandb.project": "rp"}, id="bare-project-alone"),
        pytest.param({"wandb.entity": "re", "wandb.project": "e/p"}, id="entity-and-qualified-project"),
        pytest.param({"wandb.project": "a/b/c"}, id="too-many-slashes"),
    ],
)
def test_wrongly_named_resource_project_rejected_not_rerouted(resource: dict) -> None:
    result = mapped(request(span(), resource=resource), header="he/hp", default="de/dp")
    assert (result.rejected, result.calls) == (1, {})
    (reason,) = result.reasons
    assert "do not name a project" in reason and repr(resource["wandb.project"]) in reason


def test_no_project_rejected_with_the_three_ways() -> None:
    result = mapped(request(span()), header=None, default="")
    assert (result.rejected, result.calls) == (1, {})
    assert result.reasons == [f"span {SPAN_ID.hex()}: {NO_PROJECT}"]
    for way in ("wandb.entity", "wandb.project", "project_id", "exporter.weave.project"):
        assert way in NO_PROJECT


def test_span_whose_mapping_raises_is_rejected_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    real = request_module.map_span

    def flaky(sp: Span, **kwargs: Any) -> dict:
        if sp.name == "boom":
            raise RuntimeError("helper exploded")
        return real(sp, **kwargs)

    monkeypatch.setattr(request_module, "map_span", flaky)
    ids = span_ids(3)
    result = mapped(request(span("before", span_id=ids[0]), span("boom", span_id=ids[1]), span("after", span_id=ids[2])))
    assert (result.spans, result.rejected, result.accepted) == (3, 1, 2)
    assert [c["op_name"] for c in calls_by_project(result)[PROJECT]] == ["before", "after"]
    assert result.reasons == [f"span {ids[1].hex()}: internal error while mapping: RuntimeError: helper exploded"]


@pytest.mark.parametrize(("bad", "good"), [(0, 2), (1, 1), (3, 0), (4, 1), (7, 0)])
def test_error_message_lists_at_most_three_reasons(bad: int, good: int) -> None:
    ids = span_ids(bad + good)
    spans = [span(f"bad{i}", span_id=ids[i], end=0) for i in range(bad)]
    spans += [span(f"good{i}", span_id=ids[bad + i]) for i in range(good)]
    result = mapped(request(*spans))
    assert (result.spans, result.rejected, result.accepted) == (bad + good, bad, good)
    expected_reasons = [f"span {ids[i].hex()}: end_time_unix_nano is missing" for i in range(min(bad, 3))]
    assert [r.split(" (0)")[0] for r in result.reasons] == expected_reasons
    message = result.error_message()
    if not bad:
        assert message == ""
        return
    assert message.startswith(f"rejected {bad} of {bad + good} spans: ")
    assert message.count("end_time_unix_nano is missing") == min(bad, 3)
    if bad > 3:
        assert message.endswith(f"; and {bad - 3} more")
    else:
        assert "more" not in message


def test_span_without_id_reason() -> None:
    result = mapped(request(span(span_id=b"")))
    assert result.reasons[0].startswith("span (no id): invalid span_id")
