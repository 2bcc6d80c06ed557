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


def test_a_span_with_token_counts_made_one_request() -> None:
    assert usage_of(call_of({"gen_ai.usage.input_tokens": 3})) == {"input_tokens": 3, "requests": 1}


@pytest.mark.parametrize("key", TABLES["model_responses"])
def test_a_model_response_without_counts_is_one_request(key: str) -> None:
    call = call_of({key: "resp-1", "gen_ai.request.model": "m"})
    assert list(call["summary"]["usage"].values()) == [{"requests": 1}]


@pytest.mark.parametrize(
    "attributes",
    [
        # LlamaIndex's OpenAI._prepare_chat_with_tools: an LLM-kind span that made no request
        pytest.param({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o"}, id="llamaindex-prepare"),
        # Logfire's opening "Chat Completion" span of a stream (logfire 5.4.0): the response model, but the id
        # and the usage arrive on the "streaming response" span
        pytest.param({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.system": "openai",
                      "gen_ai.response.model": "gpt-4o"}, id="logfire-stream-opening"),
        pytest.param({"ai.operationId": "ai.streamText.doStream", "ai.response.model": "gpt-4o"}, id="vercel-model-only"),
        pytest.param({"gen_ai.operation.name": "execute_tool"}, id="tool"),
    ],
)
def test_a_span_without_counts_or_response_made_no_request(attributes: dict) -> None:
    assert "usage" not in call_of(attributes)["summary"]


def test_a_trace_counts_one_request_per_model_response() -> None:
    """A streamed call traced as an opening span and a response span (Logfire): one request, not two."""
    opening = span("Chat Completion with 'gpt-4o'", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                     "gen_ai.response.model": "gpt-4o"}, span_id=b"\x01" * 8)
    streamed = span("streaming response from 'gpt-4o'", {"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o",
                                                          "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 2},
                    span_id=b"\x02" * 8, parent_span_id=b"\x01" * 8)
    requests = sum(c.get("requests", 0) for call in mapped(opening, streamed) for c in call["summary"].get("usage", {}).values())
    assert requests == 1


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
    assert usage_of(call) == {"input_tokens": 30, "requests": 1}


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
    assert usage_of(call_of(attributes)) == (None if expected is None else {**expected, "requests": 1})


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


@pytest.mark.parametrize(
    ("message", "content"),
    [
        pytest.param("It is sunny in Paris.", "It is sunny in Paris.", id="text"),  # Strands on Bedrock
        pytest.param('[{"text": "It is sunny in Paris."}]', [{"text": "It is sunny in Paris."}], id="json-blocks"),
    ],
)
def test_a_choice_whose_message_is_not_an_object_keeps_it_as_content(message: str, content: Any) -> None:
    call = call_of(events=[("gen_ai.choice", {"message": message, "finish_reason": "end_turn"})])
    assert call["output"] == {"gen_ai.completion": [{"role": "assistant", "content": content, "finish_reason": "end_turn"}]}


def test_a_strands_tool_span_has_its_arguments_and_result() -> None:
    """strands-agents' execute_tool span: the arguments in a gen_ai.tool.message event, the result in a
    gen_ai.choice event whose message is the JSON text of the result's content blocks."""
    call = call_of({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather", "gen_ai.tool.call.id": "t1"},
                   events=[("gen_ai.tool.message", {"role": "tool", "content": '{"city": "Paris"}', "id": "t1"}),
                           ("gen_ai.choice", {"message": '[{"text": "sunny, 21 C"}]', "id": "t1"})],
                   kind=Span.SPAN_KIND_INTERNAL)
    assert call["inputs"] == {"gen_ai.prompt": [{"role": "tool", "content": {"city": "Paris"}, "id": "t1"}]}
    assert call["output"] == {"gen_ai.completion": [{"role": "assistant", "content": [{"text": "sunny, 21 C"}], "id": "t1"}]}


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


# --- the 2026 keys (issue 11): renamed usage keys, Claude Code, ADK, sessions, users, costs ---------------


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("gen_ai.usage.cache_write.input_tokens", "cache_creation_input_tokens"),
        ("gen_ai.usage.cache_write_input_tokens", "cache_creation_input_tokens"),  # Strands
        ("gen_ai.usage.prompt_tokens_details.cache_creation_tokens", "cache_creation_input_tokens"),  # OpenLIT
        ("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens"),
        ("gen_ai.usage.experimental.reasoning_tokens", "reasoning_tokens"),  # ADK
        ("gen_ai.usage.completion_tokens_details.reasoning_tokens", "reasoning_tokens"),  # OpenLIT
        ("gen_ai.usage.total_tokens", "total_tokens"),
    ],
)
def test_renamed_and_new_usage_keys(key: str, field: str) -> None:
    assert usage_of(call_of({key: 7})) == {field: 7, "requests": 1}


CLAUDE_CODE = ("com.anthropic.claude_code.tracing", "2.1.121")
CLAUDE_CODE_REQUEST = {
    "model": "claude-sonnet-4-5", "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
    "input_tokens": 12, "output_tokens": 340, "cache_read_tokens": 18000, "cache_creation_tokens": 900,
    "session.id": "4f1c-session", "duration_ms": 2100,
}


def _in_scope(scope: tuple[str, str], *spans: Span) -> list[dict[str, Any]]:
    result = map_request(request(*spans, scope=scope).SerializeToString(), header_project=None, default_project="e/p",
                         rules=DEFAULT_RULES, limits=DEFAULT_LIMITS, redaction=DEFAULT_REDACTION)
    return [orjson.loads(encoded) for encoded in result.calls["e/p"]]


def test_claude_code_input_counts_the_cached_tokens_it_leaves_out() -> None:
    """Claude Code writes the Anthropic API's usage block as bare keys; its input excludes cache reads and
    writes, so the bridge adds them: Weave prices input minus the cache counts at the prompt rate."""
    (call,) = _in_scope(CLAUDE_CODE, span("claude_code.llm_request", CLAUDE_CODE_REQUEST, kind=Span.SPAN_KIND_INTERNAL))
    assert call["summary"]["usage"] == {"claude-sonnet-4-5": {
        "input_tokens": 12 + 18000 + 900, "output_tokens": 340, "total_tokens": 12 + 18000 + 900 + 340,
        "cache_read_input_tokens": 18000, "cache_creation_input_tokens": 900, "requests": 1}}
    assert call["thread_id"] == "4f1c-session" and call["turn_id"] == call["id"]  # a root: one turn


def test_bare_usage_keys_are_read_only_in_their_scope() -> None:
    (call,) = _in_scope(("some.other.tracer", "1"), span(attributes=CLAUDE_CODE_REQUEST))
    assert "usage" not in call["summary"]


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param({"gen_ai.operation.name": "invoke_workflow"}, id="genai-workflow"),
        pytest.param({"openinference.span.kind": "AGENT", "llm.token_count.prompt": 30}, id="openinference-agent"),
        pytest.param({"openinference.span.kind": "CHAIN", "llm.token_count.prompt": 30}, id="openinference-chain"),
        pytest.param({"traceloop.span.kind": "workflow"}, id="openllmetry-workflow"),
        pytest.param({"gen_ai.aggregated_usage.input_tokens": 30, "gen_ai.aggregated_usage.output_tokens": 5},
                     id="pydantic-ai-aggregated"),
    ],
)
def test_spans_that_repeat_their_childrens_totals_report_nothing(attributes: dict) -> None:
    call = call_of({"gen_ai.usage.input_tokens": 30, **attributes}, kind=Span.SPAN_KIND_INTERNAL)
    if "gen_ai.aggregated_usage.input_tokens" in attributes:  # its own gen_ai.usage.* is its own (pydantic-ai)
        assert usage_of(call) == {"input_tokens": 30, "requests": 1}
    else:
        assert "usage" not in call["summary"]


def test_a_workflow_trace_sums_to_its_model_calls_exactly() -> None:
    """Trace-exact usage as Weave adds it up (prompt_tokens into input_tokens): a workflow, an agent and a
    chain that each repeat the totals, over two model calls."""
    ids = [bytes([i]) * 8 for i in range(1, 6)]
    spans = [
        span("workflow", {"gen_ai.operation.name": "invoke_workflow", "gen_ai.usage.input_tokens": 30,
                          "gen_ai.usage.output_tokens": 5}, span_id=ids[0], kind=Span.SPAN_KIND_INTERNAL),
        span("agent", {"openinference.span.kind": "AGENT", "llm.token_count.prompt": 30, "llm.token_count.completion": 5},
             span_id=ids[1], parent_span_id=ids[0], kind=Span.SPAN_KIND_INTERNAL),
        span("chain", {"traceloop.span.kind": "workflow", "gen_ai.usage.prompt_tokens": 30},
             span_id=ids[2], parent_span_id=ids[1], kind=Span.SPAN_KIND_INTERNAL),
        span("llm 1", {"openinference.span.kind": "LLM", "llm.model_name": "m", "llm.token_count.prompt": 10,
                       "llm.token_count.completion": 2}, span_id=ids[3], parent_span_id=ids[2]),
        span("llm 2", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 20,
                       "gen_ai.usage.output_tokens": 3}, span_id=ids[4], parent_span_id=ids[2]),
    ]
    totals: dict[str, int] = {"input": 0, "output": 0, "requests": 0}
    for call in mapped(*spans):
        for counts in call["summary"].get("usage", {}).values():
            totals["input"] += counts.get("input_tokens", 0) + counts.get("prompt_tokens", 0)
            totals["output"] += counts.get("output_tokens", 0) + counts.get("completion_tokens", 0)
            totals["requests"] += counts.get("requests", 0)
    assert totals == {"input": 30, "output": 5, "requests": 2}


@pytest.mark.parametrize("key", ["session.id", "langfuse.session.id"])
def test_a_session_is_a_thread_whose_trace_roots_are_its_turns(key: str) -> None:
    root = span("agent run", {key: "s-1"}, span_id=b"\x01" * 8)
    child = span("llm", {key: "s-1"}, span_id=b"\x02" * 8, parent_span_id=b"\x01" * 8)
    calls = {call["op_name"]: call for call in mapped(root, child)}
    assert [calls[name].get("thread_id") for name in ("agent run", "llm")] == ["s-1", "s-1"]
    assert calls["agent run"]["turn_id"] == calls["agent run"]["id"] and "turn_id" not in calls["llm"]


def test_wandb_is_turn_false_wins_over_a_session_root() -> None:
    call = call_of({"session.id": "s-1", "wandb.is_turn": False})
    assert call["thread_id"] == "s-1" and "turn_id" not in call


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param({"user.id": "u-1"}, {"user_id": "u-1"}, id="user.id"),
        pytest.param({"enduser.id": "u-2"}, {"user_id": "u-2"}, id="enduser.id"),
        pytest.param({"langfuse.user.id": "u-3"}, {"user_id": "u-3"}, id="langfuse"),
        pytest.param({"gen_ai.usage.cost": 0.0021}, {"cost": 0.0021}, id="openlit-cost"),
        pytest.param({"operation.cost": 2.9e-05}, {"cost": 2.9e-05}, id="pydantic-ai-cost"),
        pytest.param({"llm.cost.total": 0.5}, {"cost": 0.5}, id="openinference-cost"),
        pytest.param({"agent.name": "Weather agent"}, {"agent_name": "Weather agent"}, id="openinference-agent-name"),
    ],
)
def test_users_costs_and_agent_names_in_attributes(attributes: dict, expected: dict) -> None:
    call = call_of(attributes)
    assert {key: call["attributes"].get(key) for key in expected} == expected
    assert all(type(v) is int for c in call["summary"].get("usage", {}).values() for v in c.values())  # costs stay out


def test_google_adk_call_llm_span() -> None:
    """ADK's call_llm span, as google-adk builds it: no gen_ai.operation.name, content as gcp.vertex.agent.*
    JSON, the session as the thread; its token counts make it a model call."""
    call = call_of({
        "gen_ai.system": "gcp.vertex.agent", "gen_ai.request.model": "gemini-2.5-flash",
        "gcp.vertex.agent.invocation_id": "e-1", "gcp.vertex.agent.session_id": "sess-1", "gcp.vertex.agent.event_id": "ev-1",
        "gcp.vertex.agent.llm_request": '{"model": "gemini-2.5-flash", "contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}',
        "gcp.vertex.agent.llm_response": '{"content": {"role": "model", "parts": [{"text": "Hello"}]}}',
        "gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 4, "gen_ai.usage.experimental.reasoning_tokens": 2,
    }, kind=Span.SPAN_KIND_INTERNAL)
    assert call["inputs"]["gcp.vertex.agent.llm_request"]["contents"][0]["parts"] == [{"text": "Hi"}]
    assert call["output"]["gcp.vertex.agent.llm_response"]["content"]["parts"] == [{"text": "Hello"}]
    assert call["summary"]["usage"] == {"gemini-2.5-flash": {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15,
                                                             "reasoning_tokens": 2, "requests": 1}}
    assert (call["thread_id"], call["turn_id"]) == ("sess-1", call["id"])


@pytest.mark.parametrize(
    ("operation", "model_call"),
    [("response", True), ("chat", True), ("invoke_agent", False), ("execute_tool", False),
     ("agent_handoff", False), ("guardrail_check", False), ("transcription", True), ("speech_generation", True)],
)
def test_openai_agents_span_kinds(operation: str, model_call: bool) -> None:
    """opentelemetry-instrumentation-openai-agents-v2: model calls (response, generation, speech, transcription)
    carry their usage; agent spans repeat it; handoffs, guardrails and tools make no request."""
    attributes = {"gen_ai.operation.name": operation, "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    if operation in ("response", "chat", "transcription", "speech_generation", "invoke_agent"):
        attributes |= {"gen_ai.usage.input_tokens": 9, "gen_ai.usage.output_tokens": 1}
    call = call_of(attributes, kind=Span.SPAN_KIND_INTERNAL)
    assert ("usage" in call["summary"]) is model_call
    assert call["attributes"]["operation_name"] == operation


@pytest.mark.parametrize(
    "part",
    [
        {"type": "text", "content": "Hi"},
        {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"type": "tool_call_response", "id": "call_1", "response": "sunny"},
        {"type": "reasoning", "content": "The user wants the weather."},
        {"type": "uri", "modality": "image", "mime_type": "image/png", "uri": "https://example.com/a.png"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBORw0KGgo="},
    ],
    ids=lambda part: part["type"],
)
def test_every_message_part_type_arrives_as_sent(part: dict) -> None:
    messages = json.dumps([{"role": "user", "parts": [part]}])
    call = call_of({"gen_ai.input.messages": messages, "gen_ai.output.messages": messages})
    assert call["inputs"] == {"gen_ai.input.messages": [{"role": "user", "parts": [part]}]}
    assert call["output"] == {"gen_ai.output.messages": [{"role": "user", "parts": [part]}]}
