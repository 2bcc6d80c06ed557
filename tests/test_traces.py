"""The per-trace stage (otel_bridge/traces/): summary.status_counts rolled up like the Weave SDK, usage
counted once per model response. End to end through the OpenTelemetry SDK's exporters, a real bridge and
the test upstream; and the memory's bounds on their own."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import bridge_settings
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from otel_bridge.traces.memory import TraceMemory

ROUTED = {"wandb.entity": "e", "wandb.project": "p", "service.name": "svc"}


def _exporter(bridge, transport: str):
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=bridge.grpc_endpoint, insecure=True)
    return HttpSpanExporter(endpoint=f"{bridge.http_url}/v1/traces")


def _provider(bridge, transport: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create(ROUTED))
    # One Export per span, as each ends: children arrive before their parents, as with a batch processor.
    provider.add_span_processor(SimpleSpanProcessor(_exporter(bridge, transport)))
    return provider


def _wait_calls(upstream, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(upstream.calls) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(upstream.calls) >= count, f"{len(upstream.calls)} calls of {count}"
    return list(upstream.calls)


def weave_status(call: dict[str, Any]) -> str:
    """The Weave server's rule (trace_server_common.py, weave 0.53.12): error when the call has an
    exception, else descendant_error when summary.status_counts counts an error, else success."""
    if call.get("exception"):
        return "error"
    if call.get("summary", {}).get("status_counts", {}).get("error", 0) > 0:
        return "descendant_error"
    return "success"


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_failing_grandchild_counts_in_its_parent_and_root(upstream, start_bridge, transport) -> None:
    bridge = start_bridge(bridge_settings(upstream))
    provider = _provider(bridge, transport)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root"):
        with tracer.start_as_current_span("parent"):
            with tracer.start_as_current_span("ok child"):
                pass
            with tracer.start_as_current_span("failing grandchild") as failing:
                failing.set_status(Status(StatusCode.ERROR, "tool failed"))
        with tracer.start_as_current_span("sibling"):
            pass
    provider.shutdown()
    calls = {c["op_name"]: c for c in _wait_calls(upstream, 5)}
    counts = {name: c["summary"]["status_counts"] for name, c in calls.items()}
    assert counts == {
        "ok child": {"success": 1, "error": 0},
        "failing grandchild": {"success": 0, "error": 1},
        "sibling": {"success": 1, "error": 0},
        "parent": {"success": 2, "error": 1},
        "root": {"success": 4, "error": 1},
    }
    assert {name: weave_status(c) for name, c in calls.items()} == {
        "ok child": "success",
        "failing grandchild": "error",
        "sibling": "success",
        "parent": "descendant_error",
        "root": "descendant_error",
    }


def _anthropic_twice(tracer, response_id: str) -> None:
    """anthropic >= 2's own span and an instrumentation's span for the same messages.create call, siblings
    under the agent's span, each with the response's usage."""
    with tracer.start_as_current_span("agent"):
        for name, scope_attrs in (
            ("anthropic.messages.create", {"gen_ai.system": "anthropic"}),
            ("anthropic.chat", {"gen_ai.system": "Anthropic", "llm.request.type": "chat"}),
        ):
            with tracer.start_as_current_span(name) as s:
                s.set_attributes(scope_attrs)
                s.set_attribute("gen_ai.operation.name", "chat")
                s.set_attribute("gen_ai.request.model", "claude-sonnet-4-5")
                s.set_attribute("gen_ai.response.model", "claude-sonnet-4-5")
                s.set_attribute("gen_ai.response.id", response_id)
                s.set_attribute("gen_ai.usage.input_tokens", 25)
                s.set_attribute("gen_ai.usage.output_tokens", 7)


def _usage_by_op(calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {c["op_name"]: c["summary"].get("usage") for c in calls}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_one_anthropic_call_traced_twice_counts_its_usage_once(upstream, start_bridge, transport) -> None:
    bridge = start_bridge(bridge_settings(upstream))
    provider = _provider(bridge, transport)
    _anthropic_twice(provider.get_tracer("t"), "msg_01XFDUDYJgAACzvnptvVoYEL")
    provider.shutdown()
    calls = _wait_calls(upstream, 3)
    first, second = (c for c in calls if c["op_name"] != "agent")
    assert first["op_name"] == "anthropic.messages.create"  # ended, and so arrived, first
    usage = first["summary"]["usage"]["claude-sonnet-4-5"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (25, 7)
    assert "usage" not in second["summary"]
    assert second["attributes"]["usage_counted_on_span"] == first["id"]
    # Both spans are kept, with everything else.
    assert second["attributes"]["model"] == "claude-sonnet-4-5"
    assert second["summary"]["status_counts"] == {"success": 1, "error": 0}


def test_the_same_span_sent_again_keeps_its_usage(upstream, start_bridge) -> None:
    """An exporter's retry (or a redelivery) is the same span, not a second one."""
    bridge = start_bridge(bridge_settings(upstream))
    provider = TracerProvider(resource=Resource.create(ROUTED))
    exporter = _exporter(bridge, "grpc")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    seen = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(seen))
    with provider.get_tracer("t").start_as_current_span("chat") as s:
        s.set_attribute("gen_ai.request.model", "m")
        s.set_attribute("gen_ai.response.id", "r1")
        s.set_attribute("gen_ai.usage.input_tokens", 3)
    exporter.export(seen.get_finished_spans())
    exporter.export(seen.get_finished_spans())
    calls = _wait_calls(upstream, 2)
    assert [bool(c["summary"].get("usage")) for c in calls] == [True, True]


def test_usage_dedupe_can_be_turned_off(upstream, start_bridge) -> None:
    bridge = start_bridge(bridge_settings(upstream, traces={"dedupe_usage_by_response_id": False}))
    provider = _provider(bridge, "grpc")
    _anthropic_twice(provider.get_tracer("t"), "msg_1")
    provider.shutdown()
    usage = _usage_by_op(_wait_calls(upstream, 3))
    assert usage["anthropic.messages.create"] == usage["anthropic.chat"] != None  # noqa: E711


def test_other_response_ids_and_other_traces_keep_their_usage(upstream, start_bridge) -> None:
    bridge = start_bridge(bridge_settings(upstream))
    provider = _provider(bridge, "grpc")
    tracer = provider.get_tracer("t")
    _anthropic_twice(tracer, "msg_A")  # trace 1
    _anthropic_twice(tracer, "msg_A")  # trace 2: the same id in another trace is another trace's business
    provider.shutdown()
    calls = _wait_calls(upstream, 6)
    with_usage = [c for c in calls if c["summary"].get("usage")]
    assert len(with_usage) == 2 and len({c["trace_id"] for c in with_usage}) == 2


# --- the memory's bounds --------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_memory_forgets_idle_traces() -> None:
    clock = _Clock()
    memory = TraceMemory(idle_timeout=10, max_spans=100, clock=clock)
    memory.added(memory.trace("a"), 3)
    clock.now = 5
    memory.added(memory.trace("b"), 2)
    clock.now = 12  # a idle for 12s, b for 7s
    memory.trace("c")
    assert (len(memory), memory.spans) == (2, 2)


def test_memory_forgets_least_recently_active_traces_past_max_spans() -> None:
    memory = TraceMemory(idle_timeout=60, max_spans=5, clock=_Clock())
    for trace_id in "abc":
        memory.added(memory.trace(trace_id), 2)
    assert memory.spans <= 5 and len(memory) == 2 and memory.forgotten_early == 1
    memory.trace("b")  # b active again: c is now the oldest
    memory.added(memory.trace("d"), 2)
    assert memory.spans <= 5 and "b" in memory._traces and "c" not in memory._traces


# --- OTLP logs joined to their spans --------------------------------------------------------------------

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


def _log_exporter(bridge, transport: str):
    if transport == "grpc":
        return GrpcLogExporter(endpoint=bridge.grpc_endpoint, insecure=True)
    return HttpLogExporter(endpoint=f"{bridge.http_url}/v1/logs")


def _chat_with_log_events(tracer, logger) -> None:
    """The shape of opentelemetry-instrumentation-openai-v2: a chat span without content, its messages,
    choice and an evaluation as log records in the span's context."""
    with tracer.start_as_current_span("chat gpt-4o") as s:
        s.set_attribute("gen_ai.operation.name", "chat")
        s.set_attribute("gen_ai.request.model", "gpt-4o")
        s.set_attribute("gen_ai.usage.input_tokens", 9)
        logger.emit(event_name="gen_ai.system.message", body={"content": "be brief"})
        logger.emit(event_name="gen_ai.user.message", body={"content": "capital of France?"})
        logger.emit(
            event_name="gen_ai.choice",
            body={"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris"}},
        )
        logger.emit(
            event_name="gen_ai.evaluation.result",
            attributes={"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.9},
        )
        logger.emit(event_name="app.audit", body="not a GenAI record")


def _check_joined(call: dict[str, Any]) -> None:
    messages = call["inputs"]["gen_ai.prompt"]
    assert [(m["role"], m["content"]) for m in messages] == [("system", "be brief"), ("user", "capital of France?")]
    (choice,) = call["output"]["gen_ai.completion"]
    assert (choice["content"], choice["finish_reason"]) == ("Paris", "stop")
    (evaluation,) = call["attributes"]["gen_ai.evaluation.results"]
    assert evaluation["gen_ai"]["evaluation"]["name"] == "relevance"


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("order", ["logs_first", "span_first"])
def test_log_records_join_their_span_in_either_order(upstream, start_bridge, transport, order) -> None:
    bridge = start_bridge(bridge_settings(upstream, traces={"logs": {"window": "10s"}}))
    spans = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(ROUTED))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    logs = LoggerProvider(resource=Resource.create(ROUTED))
    records: list = []

    class _Keep:  # the records, exported below in the order the test wants
        def export(self, batch):
            records.extend(batch)
            from opentelemetry.sdk._logs.export import LogRecordExportResult

            return LogRecordExportResult.SUCCESS

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    logs.add_log_record_processor(SimpleLogRecordProcessor(_Keep()))
    tracer, logger = provider.get_tracer("t"), logs.get_logger("openai-v2")
    with tracer.start_as_current_span("earlier call"):  # its span is not sent: only its record
        logger.emit(event_name="gen_ai.user.message", body={"content": "earlier"})
    spans.clear()
    _chat_with_log_events(tracer, logger)
    span_exporter, log_exporter = _exporter(bridge, transport), _log_exporter(bridge, transport)
    if order == "span_first":
        # The bridge holds GenAI calls only from services that send GenAI log records: this one has.
        log_exporter.export(records[:1])
        span_exporter.export(spans.get_finished_spans())
        time.sleep(0.3)
        assert upstream.calls == []  # held for its records
        log_exporter.export(records[1:])
    else:
        log_exporter.export(records)
        span_exporter.export(spans.get_finished_spans())
    (call,) = _wait_calls(upstream, 1)
    _check_joined(call)
    metrics = bridge.bridge.metrics
    from otel_bridge.telemetry.metrics import total

    assert total(metrics.log_records, outcome=("joined",)) == 4
    assert total(metrics.log_records, outcome=("not_delivered",)) >= 1


def test_a_call_whose_records_never_come_is_delivered_after_the_window(upstream, start_bridge) -> None:
    bridge = start_bridge(bridge_settings(upstream, traces={"logs": {"window": "300ms"}}))
    logs = LoggerProvider(resource=Resource.create(ROUTED))
    logs.add_log_record_processor(SimpleLogRecordProcessor(_log_exporter(bridge, "grpc")))
    provider = _provider(bridge, "grpc")
    tracer, logger = provider.get_tracer("t"), logs.get_logger("x")
    with tracer.start_as_current_span("other"):
        logger.emit(event_name="gen_ai.user.message", body={"content": "hi"})  # its span never arrives... yet
    with tracer.start_as_current_span("chat") as s:
        s.set_attribute("gen_ai.operation.name", "chat")
    (first, second) = _wait_calls(upstream, 2)
    assert {first["op_name"], second["op_name"]} == {"other", "chat"}


def test_held_calls_and_waiting_records_survive_a_restart(upstream, start_bridge, tmp_path) -> None:
    settings = bridge_settings(
        upstream, exporter={"queue": {"directory": str(tmp_path / "q")}}, traces={"logs": {"window": "30s"}}
    )
    bridge = start_bridge(settings)
    spans = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(ROUTED))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    logs = LoggerProvider(resource=Resource.create(ROUTED))
    logs.add_log_record_processor(SimpleLogRecordProcessor(_log_exporter(bridge, "grpc")))
    _chat_with_log_events(provider.get_tracer("t"), logs.get_logger("openai-v2"))  # records acked, waiting
    logs.shutdown()
    assert upstream.calls == []
    bridge.stop()
    restarted = start_bridge(settings)  # same directory: the waiting records are read back
    _exporter(restarted, "grpc").export(spans.get_finished_spans())
    (call,) = _wait_calls(upstream, 1)
    _check_joined(call)


@pytest.mark.parametrize("order", ["logs_first", "spans_first"])
def test_a_recorded_instrumentation_s_log_records_reach_their_calls(upstream, start_bridge, order) -> None:
    """The OpenAI v2 instrumentation (gen_ai_latest_experimental, event_only) sends the messages only as
    gen_ai.client.inference.operation.details log records: replayed as recorded, over OTLP/HTTP JSON, each
    model call gets its prompt and answer (tests/frameworks/recorded/openai-v2-latest.json), whichever comes
    first, on a bridge that has seen nothing of this service before: its spans come without content from a
    scope of log_content_scopes, so they wait for their records."""
    import json
    from pathlib import Path

    import httpx

    recording = json.loads((Path(__file__).parent / "frameworks" / "recorded" / "openai-v2-latest.json").read_text())
    bridge = start_bridge(bridge_settings(upstream, traces={"logs": {"window": "10s"}}))
    bodies = [("/v1/logs", body) for body in recording["logs"]]
    bodies += [("/v1/traces", body) for body in recording["traces"]]
    if order == "spans_first":
        bodies.reverse()
    for path, body in bodies:
        answer = httpx.post(bridge.http_url + path, json=body, headers={"project_id": "e/p"}, timeout=10)
        assert answer.status_code == 200, answer.text
    model_calls = {
        s["spanId"]
        for t in recording["traces"]
        for rs in t["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
        if s["name"].startswith("chat ")
    }
    calls = {c["id"]: c for c in _wait_calls(upstream, len(model_calls) + 1)}
    chats = [calls[span_id] for span_id in sorted(model_calls)]
    assert all("What is the weather in Paris?" in json.dumps(c["inputs"]) for c in chats)
    assert any("It is sunny in Paris, 21 C." in json.dumps(c["output"]) for c in chats)
