"""The rules behind the conventions: model calls, usage rollups, one spelling per count, content from span
events, JSON text, and robustness against values that break other bridges. Every call is schema-checked."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from spans import START, request, span

from otel_bridge.decode.limits import DEFAULT_LIMITS
from otel_bridge.mapping import DEFAULT_RULES, default_tables
from otel_bridge.pipeline import map_request
from otel_bridge.decode.redact import DEFAULT_REDACTION

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "proto" / "calls-complete.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
TABLES = default_tables()


def mapped(*spans: Span) -> list[dict[str, Any]]:
    result = map_request(
        request(*spans).SerializeToString(),
        header_project=None,
        default_project="e/p",
        rules=DEFAULT_RULES,
        limits=DEFAULT_LIMITS,
        redaction=DEFAULT_REDACTION,
    )
    assert result.rejected == 0, result.error_message()
    calls = [orjson.loads(encoded) for encoded in result.calls["e/p"]]
    VALIDATOR.validate({"batch": calls})
    return calls


def call_of(attributes: dict | None = None, **fields: Any) -> dict[str, Any]:
    return mapped(span(attributes=attributes, **fields))[0]


def usage_of(call: dict) -> dict | None:
    usage = call["summary"].get("usage")
    return None if usage is None else next(iter(usage.values()))


# --- model calls and rollups ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [(key, value) for key, values in TABLES["model_calls"].items() for value in values],
)
def test_each_model_call_marker_counts_one_request(key: str, value: str) -> None:
    assert usage_of(call_of({key: value, "gen_ai.usage.input_tokens": 3})) == {"input_tokens": 3, "requests": 1}


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai.operation.name": "execute_tool"},
        {"openinference.span.kind": "CHAIN"},
        {"ai.operationId": "ai.toolCall"},
        {"mlflow.spanType": "AGENT"},
        {"llm.request.type": "unknown"},
    ],
)
def test_other_spans_make_no_request(attributes: dict) -> None:
    assert usage_of(call_of({**attributes, "gen_ai.usage.input_tokens": 3})) == {"input_tokens": 3}


def test_a_model_call_without_token_counts_still_counts_its_request() -> None:
    call = call_of({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    assert call["summary"]["usage"] == {"m": {"requests": 1}}


def test_mlflow_span_type_is_read_through_its_json_quotes() -> None:
    call = call_of({"mlflow.spanType": '"CHAT_MODEL"', "mlflow.llm.model": '"gpt-4o-mini"',
                    "mlflow.chat.tokenUsage": '{"input_tokens": 2, "output_tokens": 1, "total_tokens": 3}'})
    assert call["summary"]["usage"] == {"gpt-4o-mini": {"input_tokens": 2, "output_tokens": 1, "total_tokens": 3,
                                                        "requests": 1}}


@pytest.mark.parametrize(
    ("key", "value"),
    [(key, value) for key, values in TABLES["usage_rollups"].items() for value in values],
)
def test_rollup_spans_report_no_counts(key: str, value: str) -> None:
    call = call_of({key: value, "gen_ai.usage.input_tokens": 30, "ai.usage.promptTokens": 30, "gen_ai.request.model": "m"},
                   kind=Span.SPAN_KIND_INTERNAL)
    assert "usage" not in call["summary"]
    assert call["otel_dump"]["attributes"]["gen_ai"]["usage"] == {"input_tokens": 30}  # kept where it was sent


def test_a_client_rollup_span_keeps_its_counts() -> None:
    # A remote agent (CLIENT) has no model-call children here: its counts are its own.
    call = call_of({"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 30}, kind=Span.SPAN_KIND_CLIENT)
    assert usage_of(call) == {"input_tokens": 30}


def test_parent_and_children_add_up_to_what_was_spent_once() -> None:
    """Weave sums usage over every OTel span: an agent run and its two chats must sum to the chats alone."""
    agent = span("invoke_agent a", {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 30,
                                    "gen_ai.usage.output_tokens": 5}, span_id=b"\x01" * 8, kind=Span.SPAN_KIND_INTERNAL)
    chats = [
        span(f"chat {i}", {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": n, "gen_ai.usage.output_tokens": m},
             span_id=bytes([2 + i]) * 8, parent_span_id=b"\x01" * 8)
        for i, (n, m) in enumerate([(10, 2), (20, 3)])
    ]
    totals: dict[str, int] = {}
    for call in mapped(agent, *chats):
        for counts in call["summary"].get("usage", {}).values():
            for field, count in counts.items():
                totals[field] = totals.get(field, 0) + count
    assert totals == {"input_tokens": 30, "output_tokens": 5, "total_tokens": 35, "requests": 2}


# --- one spelling per count; cached and reasoning tokens never added -------------------------------------


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param(  # Vercel AI SDK 4 doGenerate spans send both spellings of the same counts
            {"ai.usage.promptTokens": 92, "ai.usage.completionTokens": 16, "gen_ai.usage.input_tokens": 92,
             "gen_ai.usage.output_tokens": 16},
            {"input_tokens": 92, "output_tokens": 16, "total_tokens": 108},
            id="vercel-4-both-spellings",
        ),
        pytest.param(
            {"ai.usage.inputTokens": 2310, "ai.usage.outputTokens": 412, "ai.usage.totalTokens": 2722,
             "ai.usage.reasoningTokens": 320, "ai.usage.cachedInputTokens": 2048},
            {"input_tokens": 2310, "output_tokens": 412, "total_tokens": 2722, "reasoning_tokens": 320,
             "cache_read_input_tokens": 2048},
            id="vercel-5-total-sent",
        ),
        pytest.param(
            {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 50,
             "gen_ai.usage.cache_read.input_tokens": 80, "gen_ai.usage.cache_creation.input_tokens": 10,
             "gen_ai.usage.reasoning.output_tokens": 30},
            {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150, "cache_read_input_tokens": 80,
             "cache_creation_input_tokens": 10, "reasoning_tokens": 30},
            id="genai-parts-not-added-to-total",
        ),
        pytest.param(
            {"llm.token_count.prompt": 10, "llm.token_count.completion": 5,
             "llm.token_count.prompt_details.cache_read": 4, "llm.token_count.prompt_details.cache_write": 2,
             "llm.token_count.completion_details.reasoning": 3},
            {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cache_read_input_tokens": 4,
             "cache_creation_input_tokens": 2, "reasoning_tokens": 3},
            id="openinference",
        ),
        pytest.param(
            {"gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 5,
             "gen_ai.usage.cache_read_input_tokens": 4, "gen_ai.usage.cache_creation_input_tokens": 2,
             "gen_ai.usage.reasoning_tokens": 3, "llm.usage.total_tokens": 15},
            {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cache_read_input_tokens": 4,
             "cache_creation_input_tokens": 2, "reasoning_tokens": 3},
            id="openllmetry",
        ),
        pytest.param(
            {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5, "gen_ai.usage.details.reasoning_tokens": 3,
             "gen_ai.usage.details.cache_read_tokens": 4, "gen_ai.usage.details.cache_write_tokens": 1,
             "gen_ai.aggregated_usage.input_tokens": 99},
            {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15, "cache_read_input_tokens": 4,
             "cache_creation_input_tokens": 1, "reasoning_tokens": 3},
            id="pydantic-ai-details-aggregated-ignored",
        ),
        pytest.param(
            {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.input_tokens.cached": 4,
             "gen_ai.usage.input_tokens.cache_write": 1, "gen_ai.usage.output_tokens": 5,
             "gen_ai.usage.output_tokens.reasoning": 3, "gen_ai.usage.total_tokens": 15},
            {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15, "cache_read_input_tokens": 4,
             "cache_creation_input_tokens": 1, "reasoning_tokens": 3},
            id="sentry",
        ),
        pytest.param(
            {"mlflow.chat.tokenUsage": '{"input_tokens": 10, "output_tokens": 5, "total_tokens": 15, '
                                       '"cache_read_input_tokens": 4, "cache_creation_input_tokens": 2}'},
            {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15, "cache_read_input_tokens": 4,
             "cache_creation_input_tokens": 2},
            id="mlflow",
        ),
        pytest.param({"ai.usage.tokens": 4}, {"input_tokens": 4, "total_tokens": 4}, id="vercel-embeddings"),
        pytest.param({"gen_ai.usage.input_tokens": "123456789012345678901234567890"}, None, id="beyond-int64-ignored"),
        pytest.param({"gen_ai.usage.input_tokens": 1e30}, None, id="huge-float-ignored"),
    ],
)
def test_usage_per_convention(attributes: dict, expected: dict | None) -> None:
    assert usage_of(call_of(attributes)) == expected


# --- content from span events ----------------------------------------------------------------------------

DETAILS = "gen_ai.client.inference.operation.details"


def test_attributes_win_over_events() -> None:
    call = call_of({"gen_ai.input.messages": '[{"role": "user"}]'}, events=[
        (DETAILS, {"gen_ai.input.messages": '[{"role": "system"}]', "gen_ai.output.messages": '[{"role": "assistant"}]'}),
        ("gen_ai.user.message", {"content": "ignored"}),
    ])
    assert call["inputs"] == {"gen_ai.input.messages": [{"role": "user"}]}
    assert call["output"] == {"gen_ai.output.messages": [{"role": "assistant"}]}  # the attributes had none


def test_content_events_before_message_events_and_in_order() -> None:
    call = call_of(events=[
        ("gen_ai.user.message", {"content": "from a message event"}),
        ("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user", "content": "first"}]'}),
        ("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user", "content": "second"}]'}),
    ])
    assert call["inputs"] == {"gen_ai.prompt": [{"role": "user", "content": "first"}]}
    assert call["output"] == {}


def test_system_instructions_from_the_details_event() -> None:
    call = call_of({"gen_ai.operation.name": "chat"}, events=[(DETAILS, {"gen_ai.system_instructions": '["Be brief."]'})])
    assert call["attributes"]["system"] == ["Be brief."]


@pytest.mark.parametrize(
    ("event", "attributes", "message"),
    [
        ("gen_ai.system.message", {"gen_ai.system": "openai", "content": "sys"}, {"role": "system", "content": "sys"}),
        ("gen_ai.user.message", {"content": "hi", "role": "customer"}, {"role": "customer", "content": "hi"}),
        ("gen_ai.tool.message", {"content": "4", "id": "call_1"}, {"role": "tool", "content": "4", "id": "call_1"}),
        ("gen_ai.user.message", {"gen_ai.event.content": '{"role": "user", "content": "json"}'},
         {"role": "user", "content": "json"}),
        ("gen_ai.assistant.message", {}, {"role": "assistant"}),
    ],
)
def test_message_events(event: str, attributes: dict, message: dict) -> None:
    assert call_of(events=[(event, attributes)])["inputs"] == {"gen_ai.prompt": [message]}


def test_choice_events_in_event_order() -> None:
    call = call_of(events=[
        ("gen_ai.choice", {"index": 1, "finish_reason": "length", "message.content": "b"}),
        ("gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": '{"role": "assistant", "content": "a"}'}),
    ])
    assert call["output"] == {"gen_ai.completion": [
        {"role": "assistant", "content": "b", "index": 1, "finish_reason": "length"},
        {"role": "assistant", "content": "a", "index": 0, "finish_reason": "stop"},
    ]}


def test_other_events_are_not_content() -> None:
    call = call_of({"http.method": "GET"}, events=[("exception", {"exception.message": "x"}), ("ai.stream.firstChunk", {})])
    assert (call["inputs"], call["output"]) == ({}, {})


# --- robustness: whatever arrives, the span is kept and the call is schema-valid JSON ----------------------


def _nested_kvlist(depth: int) -> AnyValue:
    value = AnyValue(string_value="bottom")
    for _ in range(depth):
        value = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=value)]))
    return value


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param({"input.value": "[" * 300 + "]" * 300}, id="json-300-deep"),
        pytest.param({"input.value": "[" * 2000 + "]" * 2000}, id="json-deeper-than-the-parser-reads"),
        pytest.param({".".join(["k"] * 400): 1}, id="key-of-400-parts"),
        pytest.param({"x": 1, "x.y": 2, "x.y.z": 3, "x.y.z.w": '{"a": 1}'}, id="scalars-beside-sub-keys"),
        pytest.param({"f": math.nan, "g": math.inf, "h": -math.inf, "b": b"\xff\x00"}, id="nan-inf-bytes"),
        pytest.param({"input.value": "x" * 5_000_000}, id="5-mb-string"),
        pytest.param({"s": '"\\ud800"', "t": "\ud7ff"}, id="lone-surrogate-escape"),
        pytest.param({"big": "[18446744073709551615, -9223372036854775808]"}, id="64-bit-bounds"),
    ],
)
def test_span_kept_and_call_schema_valid(attributes: dict) -> None:
    call = call_of(attributes)  # mapped() checks the JSON against the schema
    assert call["id"] and call["otel_dump"]["attributes"] is not None


def test_deep_json_is_kept_as_the_text_it_was_sent_as() -> None:
    text = "[" * 300 + "]" * 300
    call = call_of({"input.value": text, "gen_ai.input.messages": '[{"role": "user"}]'})
    assert call["otel_dump"]["attributes"]["input"]["value"] == text
    assert call["otel_dump"]["attributes"]["gen_ai"]["input"]["messages"] == [{"role": "user"}]


def test_kvlist_as_deep_as_protobuf_decodes_is_schema_valid() -> None:
    sp = span()
    sp.attributes.append(KeyValue(key="deep", value=_nested_kvlist(30)))  # upb stops at 100 message levels
    assert mapped(sp)[0]["id"]


def test_end_before_start_gives_a_zero_length_call() -> None:
    call = call_of(start=START, end=START - 5_000_000_000)
    assert call["started_at"] == call["ended_at"]
    assert call["summary"]["weave"]["latency_ms"] == 0
    assert call["otel_dump"]["end_time_unix_nano"] == START - 5_000_000_000
