"""End to end: the OpenTelemetry SDK's OTLP/gRPC exporter -> a real bridge -> a real upstream."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import pytest
from conftest import API_KEY, bridge_settings
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from spans import request, span


def _iso(ns: int) -> str:
    """Independent of the bridge's own formatter: datetime arithmetic, truncated to microseconds."""
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _provider(endpoint: str, resource: dict, headers: tuple = ()) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)))
    seen = InMemorySpanExporter()  # what the SDK sent, to compare with what arrived
    provider.add_span_processor(SimpleSpanProcessor(seen))
    return provider, seen


def _run_agent(tracer) -> None:
    with tracer.start_as_current_span("invoke_agent planner") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "planner")
        root.set_attribute("gen_ai.conversation.id", "conv-42")
        with tracer.start_as_current_span("chat gpt-4o") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.provider.name", "openai")
            llm.set_attribute("gen_ai.request.model", "gpt-4o")
            llm.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            llm.set_attribute("gen_ai.request.temperature", 0.2)
            llm.set_attribute("gen_ai.input.messages", '[{"role": "user", "parts": [{"type": "text", "content": "plan a trip"}]}]')
            llm.set_attribute("gen_ai.output.messages", '[{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]')
            llm.set_attribute("gen_ai.usage.input_tokens", 120)
            llm.set_attribute("gen_ai.usage.output_tokens", 30)
            llm.set_attribute("gen_ai.usage.cache_read.input_tokens", 100)
            llm.set_attribute("gen_ai.usage.cache_creation.input_tokens", 7)
        try:
            with tracer.start_as_current_span("execute_tool search"):
                raise ValueError("search backend down")
        except ValueError:
            pass
        with tracer.start_as_current_span("execute_tool book") as tool:
            tool.record_exception(KeyError("no seat"))
            tool.set_status(Status(StatusCode.ERROR))  # an error with no description


def test_nested_trace_arrives_complete_and_exact(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    provider, seen = _provider(
        bridge.grpc_endpoint, {"service.name": "trip-planner", "wandb.entity": "acme", "wandb.project": "trips"}
    )
    _run_agent(provider.get_tracer("tests.agent", "0.1"))
    provider.force_flush()
    upstream.wait_for_calls(4)
    provider.shutdown()

    sent = {format(s.context.span_id, "016x"): s for s in seen.get_finished_spans()}
    calls = upstream.calls_by_id()
    assert set(calls) == set(sent)
    assert upstream.duplicate_ids() == {}
    for sent_request in upstream.requests:
        assert sent_request.path == "/v2/acme/trips/calls/complete"
        assert sent_request.headers["authorization"].startswith("Basic ")

    by_name = {call["op_name"]: call for call in calls.values()}
    root, llm = by_name["invoke_agent planner"], by_name["chat gpt-4o"]
    search, book = by_name["execute_tool search"], by_name["execute_tool book"]
    trace_id = format(sent[root["id"]].context.trace_id, "032x")

    for span_id, call in calls.items():
        original = sent[span_id]
        assert call["project_id"] == "acme/trips"
        assert call["trace_id"] == trace_id
        assert call["started_at"] == _iso(original.start_time)
        assert call["ended_at"] == _iso(original.end_time)
        expected_parent = format(original.parent.span_id, "016x") if original.parent else None
        assert call["parent_id"] == expected_parent
    assert root["parent_id"] is None
    assert {llm["parent_id"], search["parent_id"], book["parent_id"]} == {root["id"]}

    # GenAI usage keyed by the response model; cached tokens reported beside, not added; one model call.
    assert llm["summary"]["usage"] == {
        "gpt-4o-2024-08-06": {
            "input_tokens": 120,
            "output_tokens": 30,
            "total_tokens": 150,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 7,
            "requests": 1,
        }
    }
    assert llm["attributes"]["model"] == "gpt-4o-2024-08-06"
    assert llm["attributes"]["provider"] == "openai"
    assert llm["attributes"]["model_parameters"] == {"model": "gpt-4o", "temperature": 0.2}
    assert llm["inputs"] == {
        "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "plan a trip"}]}]
    }
    assert llm["output"] == {"gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]}

    # Errors: never an empty exception on an ERROR span.
    assert search["exception"] == "ValueError: search backend down"
    assert book["exception"] == "KeyError: 'no seat'"
    assert search["summary"]["weave"]["status"] == "error"
    assert root["exception"] is None and llm["exception"] is None

    # Threads: a conversation id makes the span a turn.
    assert root["thread_id"] == "conv-42" and root["turn_id"] == root["id"]
    assert "thread_id" not in llm

    # otel_dump: the whole span, with resource and scope.
    dump = llm["otel_dump"]
    assert dump["name"] == "chat gpt-4o"
    assert dump["context"]["span_id"] == llm["id"] and dump["context"]["trace_id"] == trace_id
    assert dump["kind"] == "INTERNAL"
    assert dump["parent_id"] == root["id"]
    assert dump["start_time_unix_nano"] == sent[llm["id"]].start_time
    assert dump["end_time_unix_nano"] == sent[llm["id"]].end_time
    assert dump["attributes"]["gen_ai"]["usage"]["cache_read"] == {"input_tokens": 100}
    assert dump["resource"]["attributes"]["service"]["name"] == "trip-planner"
    assert dump["resource"]["attributes"]["wandb"] == {"entity": "acme", "project": "trips"}
    assert dump["scope"]["name"] == "tests.agent" and dump["scope"]["version"] == "0.1"
    assert dump["status"] == {"code": "UNSET", "message": ""}
    book_events = book["otel_dump"]["events"]
    assert [e["name"] for e in book_events] == ["exception"]
    assert book_events[0]["attributes"]["exception"]["type"] == "KeyError"


def test_project_from_grpc_metadata_and_default(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, exporter={"weave": {"project": "team/fallback"}}))
    with_header, _ = _provider(bridge.grpc_endpoint, {"service.name": "a"}, headers=(("project_id", "team/from-header"),))
    without, _ = _provider(bridge.grpc_endpoint, {"service.name": "b"})
    with with_header.get_tracer("t").start_as_current_span("one"):
        pass
    with without.get_tracer("t").start_as_current_span("two"):
        pass
    with_header.force_flush()
    without.force_flush()
    upstream.wait_for_calls(2)
    projects = {call["op_name"]: call["project_id"] for call in upstream.calls}
    assert projects == {"one": "team/from-header", "two": "team/fallback"}
    assert {r.path for r in upstream.requests} == {
        "/v2/team/from-header/calls/complete",
        "/v2/team/fallback/calls/complete",
    }
    with_header.shutdown()
    without.shutdown()


def _export(endpoint: str, req, metadata=()):
    with grpc.insecure_channel(endpoint) as channel:
        return trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, metadata=metadata, timeout=10)


def test_spans_without_project_are_rejected_with_a_reason(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    answer = _export(bridge.grpc_endpoint, request(span("lost"), span("lost too", span_id=b"\x01" * 8)))
    assert answer.partial_success.rejected_spans == 2
    assert "wandb.entity + wandb.project" in answer.partial_success.error_message
    assert "exporter.weave.project" in answer.partial_success.error_message


def test_one_bad_span_does_not_sink_its_neighbours(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    good = span("good")
    bad = span("bad", span_id=b"\x02" * 4)
    answer = _export(
        bridge.grpc_endpoint, request(good, bad, resource={"wandb.entity": "e", "wandb.project": "p"})
    )
    assert answer.partial_success.rejected_spans == 1
    assert "invalid span_id" in answer.partial_success.error_message
    upstream.wait_for_calls(1)
    assert [c["op_name"] for c in upstream.calls] == ["good"]


def test_gzip_and_large_messages_are_accepted(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    # Over gRPC's 4 MiB default in all; each value exactly at mapping.limits.max_attribute_value_length.
    values = {f"big.{i}": "x" * (1024 * 1024) for i in range(6)}
    with grpc.insecure_channel(bridge.grpc_endpoint, compression=grpc.Compression.Gzip) as channel:
        answer = trace_service_pb2_grpc.TraceServiceStub(channel).Export(
            request(span("big", values), resource={"wandb.entity": "e", "wandb.project": "p"}), timeout=30
        )
    assert answer.partial_success.rejected_spans == 0
    assert answer.partial_success.error_message == ""
    call = upstream.wait_for_calls(1)[0]
    assert call["otel_dump"]["attributes"]["big"] == ["x" * (1024 * 1024)] * 6


def test_message_over_the_limit_is_refused_and_the_server_keeps_serving(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, receiver={"grpc": {"max_recv_msg_size_mib": 1}}))
    with pytest.raises(grpc.RpcError) as refused:
        _export(bridge.grpc_endpoint, request(span("big", {"input.value": "x" * (2 * 1024 * 1024)})))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    answer = _export(bridge.grpc_endpoint, request(span("small"), resource={"wandb.entity": "e", "wandb.project": "p"}))
    assert answer.partial_success.rejected_spans == 0
    upstream.wait_for_calls(1)


def test_api_key_never_logged(upstream, start_bridge, caplog):
    caplog.set_level("DEBUG")
    bridge = start_bridge(bridge_settings(upstream))
    _export(bridge.grpc_endpoint, request(span("s"), resource={"wandb.entity": "e", "wandb.project": "p"}))
    upstream.wait_for_calls(1)
    assert "sending calls to " + upstream.url in caplog.text
    assert "OTLP/gRPC receiver listening on 127.0.0.1:" in caplog.text
    assert API_KEY not in caplog.text
