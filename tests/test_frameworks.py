"""Real frameworks' traces, replayed through the bridge: what a Weave user sees of each agent run.

The replay feeds a recording's requests (traces and logs) to what the receivers call, in process: the
Pipeline, the per-trace stage (status_counts, usage once per response, the log join) and the in-memory
queue, then reads the queue as the exporter does. No servers: the last test sends one recording over gRPC.

Each recording in tests/frameworks/recorded/ is what one framework exported (tests/frameworks/record.py
makes them, against the fake model APIs of tests/frameworks/fake_models.py), so the expected values are
known: the prompt, the answer, the tool arguments and result, the failing tool, and every model response's
token counts (`served`). Every check runs on every recording. Where the framework itself does not send a
thing, NOT_SENT says so, and the check then proves it is absent from the spans (so the entry cannot go
stale); where the mapping misses it, GAPS marks the check as a strict xfail with the exact gap.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from conftest import bridge_settings
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from otel_bridge.config import Redact, Traces
from otel_bridge.decode.limits import DEFAULT_LIMITS
from otel_bridge.decode.logs import parse_otlp_logs_json
from otel_bridge.decode.otlp import parse_otlp_json
from otel_bridge.decode.redact import compile_redaction
from otel_bridge.mapping import DEFAULT_RULES
from otel_bridge.exporter.queue import open_queue
from otel_bridge.pipeline import ExportResult, Mapper, Pipeline
from otel_bridge.telemetry.metrics import Metrics
from otel_bridge.traces import TraceStage

FRAMEWORKS = Path(__file__).resolve().parent / "frameworks"
sys.path.insert(0, str(FRAMEWORKS))
from fake_models import ANSWER, FORECAST_ERROR, PROMPT, WEATHER  # noqa: E402

RECORDINGS = {p.stem: p for p in sorted((FRAMEWORKS / "recorded").glob("*.json"))}
PROJECT = "team/frameworks"
# The recordings hold the prompt and answers in full: compare mappings, not redaction.
NO_REDACTION = compile_redaction(Redact(default_rules=False))


@dataclass(frozen=True)
class Facts:
    """How to find one framework's calls, by span name (regular expressions, matched in full)."""

    model: str  # the model calls
    agent: str | None = None  # the agent run; None: the trace's root
    tool: str = "{tool}"  # a tool's call, {tool} standing for the tool's name


FACTS: dict[str, Facts] = {
    "openai-agents": Facts(model="response"),
    "langchain-openinference": Facts(model="ChatOpenAI"),
    # The root invoke_agent span carries no content; the graph's run under it does.
    "langchain-openllmetry": Facts(model="ChatOpenAI.chat", agent="weather_agent.workflow", tool="execute_tool {tool}"),
    "pydantic-ai": Facts(model="chat gpt-4o-mini", tool="execute_tool {tool}"),
    "anthropic-openllmetry": Facts(model="anthropic.chat"),
    "anthropic-openinference": Facts(model="beta.messages.create"),
    "anthropic-native": Facts(model="anthropic.messages.create", tool="anthropic.custom_tool_use {tool}"),
    # Each model call twice: the SDK's own span and OpenLLMetry's sibling, with the same response id.
    "anthropic-native-openllmetry": Facts(model="anthropic.messages.create|anthropic.chat", tool="anthropic.custom_tool_use {tool}"),
    "openai-v2": Facts(model="chat gpt-4o-mini"),
    "openai-v2-latest": Facts(model="chat gpt-4o-mini"),
    "strands-agents": Facts(model="chat", tool="execute_tool {tool}"),
    "strands-agents-latest": Facts(model="chat", tool="execute_tool {tool}"),
    "llama-index": Facts(model=r"OpenAI\.astream_chat", tool="FunctionTool.acall"),
    "smolagents-openinference": Facts(model=r"OpenAIModel\.generate", tool="SimpleTool"),
    "google-adk": Facts(model="generate_content .*", agent="invoke_agent .*", tool="execute_tool {tool}"),
    "agent-framework": Facts(model="chat .*", tool="execute_tool {tool}"),
    "mlflow-tracing": Facts(model="Completions", tool="execute_tool {tool}"),
    "openlit-openai": Facts(model="chat .*"),
    "litellm-otel": Facts(model="litellm_request", agent="invoke_agent .*", tool="execute_tool {tool}"),
    "litellm-weave": Facts(model="litellm_request", agent="invoke_agent .*", tool="execute_tool {tool}"),
    "logfire-openai": Facts(model=r"Chat Completion with .*|streaming response from .*", tool="execute_tool {tool}"),
}

_CLIENT_ONLY = {
    "prompt_in_agent": "the root is the application's own span around the run",
    "answer_in_agent": "the root is the application's own span around the run",
    "tool_arguments": "the instrumentation traces model calls only (for anthropic: with the SDK's own tracing off)",
    "tool_result": "the instrumentation traces model calls only (for anthropic: with the SDK's own tracing off)",
    "tool_error": "the instrumentation traces model calls only (for anthropic: with the SDK's own tracing off)",
    "tool_error_in_root_status": "the instrumentation traces model calls only (for anthropic: with the SDK's own tracing off)",
}
# (recording, check) -> why the framework's own spans lack it; the check then asserts its absence.
NOT_SENT: dict[tuple[str, str], str] = {
    ("openai-agents", "prompt_in_agent"): "the agent and workflow spans carry no input",
    ("openai-agents", "answer_in_agent"): "the agent and workflow spans carry no output",
    ("pydantic-ai", "answer_in_model"): "a tool's exception ends a pydantic-ai run: no answer is asked for",
    ("pydantic-ai", "answer_in_agent"): "a tool's exception ends a pydantic-ai run: there is no answer",
    # Client instrumentations alone: the model calls, inside the application's own span around the run.
    **{
        (name, check): reason
        for name in ("anthropic-openllmetry", "anthropic-openinference", "openai-v2", "openai-v2-latest")
        for check, reason in _CLIENT_ONLY.items()
    },
    ("openai-v2", "prompt_in_model"): "CAPTURE_MESSAGE_CONTENT=true is no mode of opentelemetry-util-genai 1.1b0: no content",
    ("openai-v2", "answer_in_model"): "CAPTURE_MESSAGE_CONTENT=true is no mode of opentelemetry-util-genai 1.1b0: no content",
    **{
        (name, check): "the tool runner's span (the root) carries no content"
        for name in ("anthropic-native", "anthropic-native-openllmetry")
        for check in ("prompt_in_agent", "answer_in_agent")
    },
    ("google-adk", "prompt_in_agent"): "ADK's invoke_agent and invoke_workflow spans carry no input, even with content capture on",
    ("google-adk", "answer_in_agent"): "ADK's invoke_agent and invoke_workflow spans carry no output, even with content capture on",
    ("llama-index", "prompt_in_agent"): "FunctionAgent.run's input.value is the workflow's init_state, without the user message",
}

# (recording, check) -> what the mapping lacks: a strict xfail the mapping's fixes remove.
GAPS: dict[tuple[str, str], str] = {}


# --- the replay ----------------------------------------------------------------------------------------------


def _value(any_value: dict) -> Any:
    for kind in ("stringValue", "boolValue", "intValue", "doubleValue"):
        if kind in any_value:
            return any_value[kind]
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    if "kvlistValue" in any_value:
        return {kv["key"]: _value(kv.get("value", {})) for kv in any_value["kvlistValue"].get("values", [])}
    return None


@dataclass
class Replay:
    recording: dict[str, Any]
    calls: list[dict[str, Any]]  # in start order
    spans: dict[str, dict[str, Any]]  # span id (hex) -> the recorded OTLP/JSON span

    def named(self, pattern: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if re.fullmatch(pattern, self.spans[c["id"]]["name"])]

    def raw_text(self, call: dict[str, Any]) -> str:
        """Everything the span itself carries: its attributes and its events' attributes, as text."""
        span = self.spans[call["id"]]
        attrs = [span.get("attributes", [])] + [e.get("attributes", []) for e in span.get("events", [])]
        return json.dumps([{kv["key"]: _value(kv.get("value", {})) for kv in a} for a in attrs], ensure_ascii=False)


def requests_of(recording: dict[str, Any], signal: str = "traces") -> list[bytes]:
    """The recording's requests of one signal as the protobuf a receiver hands the pipeline."""
    if signal == "logs":
        return [parse_otlp_logs_json(json.dumps(body).encode()) for body in recording["logs"]]
    return [parse_otlp_json(json.dumps(body)).SerializeToString() for body in recording["traces"]]


async def _through_the_bridge(recording: dict[str, Any], logs_first: bool) -> list[dict[str, Any]]:
    """The recording's requests through what the receivers call (Pipeline, TraceStage, the in-memory queue),
    the traces before the logs or after; then the stage stops (queuing the calls it held) and the queue is
    read as the exporter reads it."""
    metrics = Metrics()
    queue = open_queue(None, max_bytes=1 << 30)
    mapper = Mapper(DEFAULT_RULES, DEFAULT_LIMITS, NO_REDACTION)
    stage = TraceStage(Traces(), rules=mapper.rules, queue=queue, metrics=metrics)
    pipeline = Pipeline(queue=queue, mapper=mapper, default_project=PROJECT, metrics=metrics, stage=stage)
    try:
        exports: list[Any] = [pipeline.export_logs(data, transport="http") for data in requests_of(recording, "logs")]
        traces = [pipeline.export(data, header_project=None, transport="http") for data in requests_of(recording)]
        exports = exports + traces if logs_first else traces + exports
        for export in exports:
            result = await export
            assert not isinstance(result, ExportResult) or result.rejected_spans == 0, result.error_message
        await stage.stop()
        queued = queue.size_calls
        batch = await queue.take(max_calls=1 << 20, max_bytes=1 << 30, linger=0)
        assert (batch.project, len(batch.calls)) == (PROJECT, queued)
    finally:
        pipeline.close()
    return [orjson.loads(c) for c in batch.calls]


def replay(name: str, *, logs_first: bool = False) -> Replay:
    recording = json.loads(RECORDINGS[name].read_text())
    calls = asyncio.run(_through_the_bridge(recording, logs_first))
    spans = {
        s["spanId"]: s
        for t in recording["traces"]
        for rs in t.get("resourceSpans", [])
        for ss in rs.get("scopeSpans", [])
        for s in ss.get("spans", [])
    }
    assert sorted(c["id"] for c in calls) == sorted(spans), "one call per recorded span"
    calls.sort(key=lambda c: c["started_at"])
    return Replay(recording, calls, spans)


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- the checks ----------------------------------------------------------------------------------------------


def _usage_by_model(calls: list[dict[str, Any]]) -> dict[str, Counter]:
    """Weave's roll-up of summary.usage over a trace: prompt_tokens count as input, completion as output."""
    totals: dict[str, Counter] = defaultdict(Counter)
    for call in calls:
        for model, usage in ((call.get("summary") or {}).get("usage") or {}).items():
            totals[model]["input"] += usage.get("input_tokens", 0) + usage.get("prompt_tokens", 0)
            totals[model]["output"] += usage.get("output_tokens", 0) + usage.get("completion_tokens", 0)
            totals[model]["requests"] += usage.get("requests", 0)
    return totals


def _served_by_model(recording: dict[str, Any]) -> dict[str, Counter]:
    totals: dict[str, Counter] = defaultdict(Counter)
    for served in recording["served"]:
        totals[served["model"]]["input"] += served["real"]["input_tokens"]
        totals[served["model"]]["output"] += served["real"]["output_tokens"]
        totals[served["model"]]["requests"] += 1
    return totals


def check_usage_tokens(r: Replay, facts: Facts) -> None:
    """Input and output tokens over all calls, by model, are exactly what the model APIs served."""
    got = {m: (c["input"], c["output"]) for m, c in _usage_by_model(r.calls).items()}
    assert got == {m: (c["input"], c["output"]) for m, c in _served_by_model(r.recording).items()}


def check_usage_requests(r: Replay, facts: Facts) -> None:
    """One request per model response, on no other call."""
    got = {m: c["requests"] for m, c in _usage_by_model(r.calls).items()}
    assert got == {m: c["requests"] for m, c in _served_by_model(r.recording).items()}


def check_one_root(r: Replay, facts: Facts) -> None:
    """Each trace has one root call, and every parent is a call of the same trace."""
    ids = {c["id"]: c["trace_id"] for c in r.calls}
    roots = Counter(c["trace_id"] for c in r.calls if not c.get("parent_id"))
    assert roots == Counter({trace: 1 for trace in set(ids.values())})
    assert all(ids.get(c["parent_id"]) == c["trace_id"] for c in r.calls if c.get("parent_id"))


def _agent(r: Replay, facts: Facts) -> dict[str, Any]:
    if facts.agent is None:
        (root,) = [c for c in r.calls if not c.get("parent_id")]
        return root
    return r.named(facts.agent)[0]


def _model_calls(r: Replay, facts: Facts) -> list[dict[str, Any]]:
    calls = r.named(facts.model)
    assert calls, f"no call named {facts.model!r}"
    return calls


def _tool(tool: str) -> Any:
    def find(r: Replay, facts: Facts) -> dict[str, Any]:
        calls = [c for c in r.named(facts.tool.format(tool=tool)) if tool in r.spans[c["id"]]["name"] + r.raw_text(c)]
        assert calls, f"no call of tool {tool}"
        return calls[0]

    return find


# Content checks: (which call, which of its fields, the text it must hold).
CONTENT: dict[str, tuple[Any, str, str]] = {
    "prompt_in_agent": (_agent, "inputs", PROMPT),
    "prompt_in_model": (lambda r, facts: _model_calls(r, facts)[0], "inputs", PROMPT),
    "answer_in_model": (lambda r, facts: _model_calls(r, facts)[-1], "output", ANSWER),
    "answer_in_agent": (_agent, "output", ANSWER),
    "tool_arguments": (_tool("get_weather"), "inputs", "Paris"),
    "tool_result": (_tool("get_weather"), "output", WEATHER),
}


def check_tool_error(r: Replay, facts: Facts) -> None:
    """The failing tool's call is an error, with the exception (its message where the framework sends it)."""
    call = _tool("get_forecast")(r, facts)
    assert call["summary"]["weave"]["status"] == "error"
    assert call["exception"]
    if FORECAST_ERROR in r.raw_text(call):
        assert FORECAST_ERROR in call["exception"]


def _weave_status(call: dict[str, Any]) -> str:
    """The Weave server's status of a call (tests/test_traces.py's weave_status)."""
    if call.get("exception"):
        return "error"
    return "descendant_error" if call["summary"].get("status_counts", {}).get("error", 0) > 0 else "success"


def check_tool_error_in_root_status(r: Replay, facts: Facts) -> None:
    """The failing tool shows on its trace's root (descendant_error, from summary.status_counts), and every
    call's status_counts count its own status and those of the descendants the replay delivered before it."""
    tool = _tool("get_forecast")(r, facts)
    (root,) = [c for c in r.calls if c["trace_id"] == tool["trace_id"] and not c.get("parent_id")]
    assert _weave_status(root) in ("error", "descendant_error")
    for call in r.calls:
        counts = call["summary"]["status_counts"]
        assert counts["error"] >= (1 if call["exception"] else 0) and counts["success"] + counts["error"] >= 1


def _content_check(check: str) -> Any:
    find, field, text = CONTENT[check]

    def run(r: Replay, facts: Facts) -> None:
        assert text in _text(find(r, facts)[field])

    return run


CHECKS = {
    **{name[len("check_") :]: f for name, f in sorted(globals().items()) if name.startswith("check_")},
    **{check: _content_check(check) for check in CONTENT},
}


def _assert_not_sent(r: Replay, facts: Facts, check: str) -> None:
    """The framework's spans do not hold what `check` looks for: no such call, or its span lacks the text."""
    find, _, text = CONTENT.get(check, (_tool("get_forecast"), "exception", FORECAST_ERROR))
    try:
        call = find(r, facts)
    except AssertionError:
        return
    assert text not in r.raw_text(call), f"{check}: the span sends it after all; drop its NOT_SENT entry"


def _cases() -> list[Any]:
    cases = []
    for name in RECORDINGS:
        for check in CHECKS:
            marks = [pytest.mark.xfail(strict=True, reason=GAPS[name, check])] if (name, check) in GAPS else []
            cases.append(pytest.param(name, check, marks=marks, id=f"{name}-{check}"))
    return cases


_replays: dict[str, Replay] = {}


@pytest.mark.parametrize(("name", "check"), _cases())
def test_framework_recording(name: str, check: str) -> None:
    if name not in _replays:
        _replays[name] = replay(name)
    r, facts = _replays[name], FACTS[name]
    if (name, check) in NOT_SENT:
        _assert_not_sent(r, facts, check)
    else:
        CHECKS[check](r, facts)


def test_every_recording_has_facts_and_every_entry_a_recording() -> None:
    assert set(FACTS) == set(RECORDINGS)
    for name, check in [*NOT_SENT, *GAPS]:
        assert name in RECORDINGS and check in CHECKS, (name, check)
    assert not set(NOT_SENT) & set(GAPS)


@pytest.mark.parametrize("name", [name for name, path in RECORDINGS.items() if json.loads(path.read_text())["logs"]])
def test_logs_before_or_after_the_spans_make_the_same_calls(name: str) -> None:
    """The replay sends the traces first, to a bridge that has seen no log records: the calls without content
    from an instrumentation that sends it as records (log_content_scopes) wait for them. Sent first, the
    records wait for the spans instead, and each call comes out the same, but for a call with content of
    its own named by a record: that one waits only for a service known to send records, so the record joins
    it only when it comes first. OpenLIT sends one such: the record of its last (streamed) call, emitted once
    the stream is read, names the call's parent (run_agent, which has gen_ai.output.messages)."""
    if name not in _replays:
        _replays[name] = replay(name)
    spans_first, logs_first = _replays[name], replay(name, logs_first=True)
    named = {
        record["spanId"]
        for body in spans_first.recording["logs"]
        for rl in body.get("resourceLogs", [])
        for sl in rl.get("scopeLogs", [])
        for record in sl.get("logRecords", [])
        if record.get("spanId")
    }
    with_content = {c["id"] for c in spans_first.calls if c["inputs"] or c["output"]}
    differ = {a["id"] for a, b in zip(spans_first.calls, logs_first.calls, strict=True) if a != b}
    assert differ <= named & with_content


def test_recordings_are_what_the_fake_models_served() -> None:
    """Each recording ran the script up to the failing tool at least (the usage checks rely on `served`)."""
    for name, path in RECORDINGS.items():
        recording = json.loads(path.read_text())
        assert recording["framework"] == name
        assert len(recording["served"]) >= 2, name
        assert recording["traces"], name


def test_a_recording_through_the_grpc_receiver_arrives_as_replayed(upstream, start_bridge) -> None:
    """The replay above maps in-process; the running bridge, over gRPC into the checking upstream, agrees."""
    name = "openai-agents"
    expected = {c["id"]: c for c in replay(name).calls}
    bridge = start_bridge(bridge_settings(upstream, exporter={"weave": {"project": PROJECT}}))
    recording = json.loads(RECORDINGS[name].read_text())
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        for data in recording["traces"]:
            answer = stub.Export(parse_otlp_json(json.dumps(data)), timeout=10)
            assert not answer.HasField("partial_success") or answer.partial_success.rejected_spans == 0
    upstream.wait_for_calls(len(expected))
    got = upstream.calls_by_id()
    assert upstream.errors == []
    assert set(got) == set(expected)
    for call_id, call in expected.items():
        for key in ("op_name", "parent_id", "trace_id", "inputs", "output", "exception"):
            assert got[call_id].get(key) == call.get(key), (call_id, key)
        assert got[call_id]["summary"].get("usage") == call["summary"].get("usage"), call_id
