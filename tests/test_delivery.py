"""Delivery under faults, end to end: real bridge, real gRPC, the fault-injecting upstream.

Each case ends with every acknowledged span delivered exactly once while the bridge keeps running (or,
for calls the upstream refuses, in the dead-letter file), and the counters saying so.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import grpc
import pytest
from conftest import API_KEY, bridge_settings, free_port
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from spans import request, span

from otel_bridge.telemetry.metrics import total


def span_id(n: int) -> bytes:
    return (0x1000 + n).to_bytes(8, "big")


def spans_request(first: int, count: int, project: str = "acme/agents", payload: int = 200):
    """`count` spans with ids first..first+count-1 (as span_id(n)), each with `payload` characters of input."""
    entity, name = project.split("/")
    spans = [span(f"op {n}", {"input.value": f"{n}:" + "x" * payload}, span_id=span_id(n)) for n in range(first, first + count)]
    return request(*spans, resource={"wandb.entity": entity, "wandb.project": name})


def ids(first: int, count: int) -> set[str]:
    return {span_id(n).hex() for n in range(first, first + count)}


def export(endpoint: str, req, timeout: float = 10):
    with grpc.insecure_channel(endpoint) as channel:
        return trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=timeout)


def wait_until(condition, timeout: float = 10.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.02)


def assert_delivered_once(upstream, expected: set[str]) -> None:
    upstream.wait_for_calls(len(expected))
    assert set(upstream.calls_by_id()) == expected
    assert upstream.duplicate_ids() == {}


def test_upstream_down_then_up(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    upstream.set_down(True)
    for k in range(3):
        assert export(bridge.grpc_endpoint, spans_request(10 * k, 10)).partial_success.rejected_spans == 0
    metrics = bridge.bridge.metrics
    wait_until(lambda: total(metrics.retried_calls) > 0, message="a retry")
    assert [a.status for a in upstream.attempts][:1] in ([], [None])  # refused connections never reach it
    upstream.set_down(False)
    assert_delivered_once(upstream, ids(0, 30))
    wait_until(lambda: total(metrics.sent_calls) == 30, message="sent_calls == 30")
    assert total(metrics.received_spans) == total(metrics.accepted_spans) == 30
    assert total(metrics.dead_lettered_calls) == 0


def test_503_several_times(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    upstream.fail_next(4, status=503)
    export(bridge.grpc_endpoint, spans_request(0, 25))
    assert_delivered_once(upstream, ids(0, 25))
    assert [a.status for a in upstream.attempts][:5] == [503, 503, 503, 503, 200]


def test_429_waits_for_retry_after(upstream, start_bridge):
    # Backoff alone would retry within 200ms (exporter.retry.max_interval of the test settings).
    bridge = start_bridge(bridge_settings(upstream))
    upstream.fail_next(1, status=429, headers={"Retry-After": "1"})
    export(bridge.grpc_endpoint, spans_request(0, 5))
    assert_delivered_once(upstream, ids(0, 5))
    throttled, accepted = upstream.attempts[:2]
    assert (throttled.status, accepted.status) == (429, 200)
    assert accepted.at - throttled.at >= 1.0


def test_413_splits_and_every_request_fits(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    upstream.max_body_bytes = 8000  # a few calls of ~1.5 KB per request at most
    export(bridge.grpc_endpoint, spans_request(0, 40, payload=500))
    assert_delivered_once(upstream, ids(0, 40))
    assert 413 in [a.status for a in upstream.attempts]
    assert all(r.raw_size <= 8000 for r in upstream.requests)


def test_a_lone_call_too_large_for_the_upstream_is_trimmed(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    upstream.max_body_bytes = 20_000
    export(bridge.grpc_endpoint, spans_request(0, 1, payload=50_000))
    (call,) = upstream.wait_for_calls(1)
    assert call["id"] == span_id(0).hex()
    assert call["inputs"]["input.value"].startswith("0:xxxx")
    assert "[truncated by otel-bridge:" in call["inputs"]["input.value"] + json.dumps(call["otel_dump"])
    assert total(bridge.bridge.metrics.trimmed_calls) >= 1


def test_422_dead_letters_only_the_refused_calls(upstream, start_bridge, tmp_path):
    dead = tmp_path / "dead.jsonl"
    bridge = start_bridge(bridge_settings(upstream, exporter={"dead_letter": {"path": str(dead)}}))
    refused = {span_id(3).hex(), span_id(17).hex()}
    upstream.reject_ids(refused)
    export(bridge.grpc_endpoint, spans_request(0, 24))
    assert_delivered_once(upstream, ids(0, 24) - refused)
    metrics = bridge.bridge.metrics
    wait_until(lambda: total(metrics.dead_lettered_calls) == 2, message="2 dead letters")
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert {line["call"]["id"] for line in lines} == refused
    for line in lines:
        assert (line["status"], line["reason"], line["project_id"]) == (422, "invalid", "acme/agents")
        assert line["answer"]["detail"][0]["msg"] == f"call id {line['call']['id']!r} rejected by test"
        assert line["call"]["started_at"].endswith("Z") and line["call"]["inputs"]
    assert total(metrics.send_failed_calls, reason=("invalid",)) == 2
    wait_until(lambda: total(metrics.sent_calls) == 22, message="sent_calls == 22")


def test_slow_answers_within_the_timeout_are_waited_for(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, exporter={"weave": {"timeout": "5s"}}))
    upstream.delay = 0.3
    export(bridge.grpc_endpoint, spans_request(0, 10))
    assert_delivered_once(upstream, ids(0, 10))
    assert total(bridge.bridge.metrics.retried_calls) == 0


def test_answers_slower_than_the_timeout_are_retried_at_least_once(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, exporter={"weave": {"timeout": "200ms"}}))
    upstream.delay = 0.5
    export(bridge.grpc_endpoint, spans_request(0, 10))
    wait_until(lambda: total(bridge.bridge.metrics.retried_calls) > 0, message="a timed-out attempt")
    upstream.delay = 0.0
    upstream.wait_for_calls(10)
    wait_until(lambda: total(bridge.bridge.metrics.sent_calls) == 10, message="sent_calls == 10")
    # The upstream may have accepted a timed-out attempt too: at least once, and a resent call is identical
    # (same id and started_at), which is how the upstream deduplicates it.
    assert set(upstream.calls_by_id()) == ids(0, 10)
    by_id: dict[str, list[dict]] = {}
    for call in upstream.calls:
        by_id.setdefault(call["id"], []).append(call)
    assert all(copy == copies[0] for copies in by_id.values() for copy in copies)


def test_a_refused_key_stops_only_that_project_and_keeps_its_calls(upstream, start_bridge, caplog, tmp_path):
    dead = tmp_path / "dead.jsonl"
    bridge = start_bridge(bridge_settings(upstream, exporter={"dead_letter": {"path": str(dead)}}))
    upstream.reject_ids(ids(0, 5), status=403)  # the key may not write to acme/locked
    export(bridge.grpc_endpoint, spans_request(0, 5, project="acme/locked"))
    export(bridge.grpc_endpoint, spans_request(100, 5, project="acme/open"))
    assert_delivered_once(upstream, ids(100, 5))
    metrics = bridge.bridge.metrics
    wait_until(lambda: metrics.registry.get_sample_value("otelbridge_exporter_blocked_projects") == 1, message="blocked")
    assert "delivery to acme/locked is stopped" in caplog.text and "exporter.weave.api_key" in caplog.text
    assert not dead.exists()
    upstream.reject_ids(())  # access granted: the next try (every exporter.retry.max_interval) gets through
    assert_delivered_once(upstream, ids(0, 5) | ids(100, 5))
    wait_until(lambda: metrics.registry.get_sample_value("otelbridge_exporter_blocked_projects") == 0, message="unblocked")


def test_retries_exhausted_in_memory_go_to_the_dead_letter_file(upstream, start_bridge, tmp_path):
    dead = tmp_path / "dead.jsonl"
    settings = bridge_settings(
        upstream, exporter={"retry": {"max_elapsed_time": "300ms"}, "dead_letter": {"path": str(dead)}}
    )
    bridge = start_bridge(settings)
    upstream.set_down(True)
    export(bridge.grpc_endpoint, spans_request(0, 3))
    metrics = bridge.bridge.metrics
    wait_until(lambda: total(metrics.dead_lettered_calls) == 3, message="3 dead letters")
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert {line["call"]["id"] for line in lines} == ids(0, 3)
    assert {line["reason"] for line in lines} == {"retries_exhausted"}
    assert "max_elapsed_time" in lines[0]["error"]
    assert bridge.bridge.queue.size_calls == 0


def _retry_delay(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None and status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    (detail,) = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9


def test_a_full_queue_answers_unavailable_with_retry_info_then_recovers(upstream, start_bridge, caplog):
    caplog.set_level("INFO")
    settings = bridge_settings(
        upstream,
        exporter={"queue": {"max_bytes": 30_000}, "batch": {"max_bytes": 20_000}},
        telemetry={"degraded_log_interval": "100ms"},
    )
    bridge = start_bridge(settings)
    upstream.set_down(True)
    accepted: set[str] = set()
    refused = None
    for k in range(20):
        try:
            export(bridge.grpc_endpoint, spans_request(10 * k, 10))
        except grpc.RpcError as error:
            refused = error, k
            break
        accepted |= ids(10 * k, 10)
    assert refused is not None, "the queue never filled"
    error, k = refused
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "exporter.queue.max_bytes" in error.details()
    assert _retry_delay(error) > 0
    metrics = bridge.bridge.metrics
    assert total(metrics.refused_spans, reason=("queue_full",)) == 10
    wait_until(lambda: "delivery degraded: queue holds" in caplog.text, message="the degraded report")

    # A real SDK exporter gets UNAVAILABLE, waits the RetryInfo delay, and succeeds once the queue drains.
    provider = TracerProvider(resource=Resource.create({"wandb.entity": "acme", "wandb.project": "agents"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=bridge.grpc_endpoint, insecure=True)))
    threading.Timer(0.5, upstream.set_down, [False]).start()
    with provider.get_tracer("t").start_as_current_span("sent while full") as sdk_span:
        pass
    provider.shutdown()
    sdk_id = format(sdk_span.get_span_context().span_id, "016x")
    assert "retrying in 1.00s" in caplog.text  # the SDK honoured RetryInfo

    export(bridge.grpc_endpoint, spans_request(10 * k, 10))  # the refused request, resent
    assert_delivered_once(upstream, accepted | ids(10 * k, 10) | {sdk_id})
    wait_until(lambda: "delivery recovered" in caplog.text, message="the recovery line")


def test_a_failing_project_holds_one_consumer_while_others_flow(upstream, start_bridge):
    # acme/broken answers 503 forever; its batches must not take every consumer, or acme/agents starves.
    settings = bridge_settings(
        upstream,
        exporter={"batch": {"max_calls": 1}, "queue": {"num_consumers": 2}, "retry": {"max_elapsed_time": 0}},
    )
    bridge = start_bridge(settings)
    upstream.fail_project("acme/broken", 503)
    export(bridge.grpc_endpoint, spans_request(0, 6, project="acme/broken"))  # 6 batches of one call
    wait_until(lambda: any(a.reason == "fail_project" for a in upstream.attempts), message="a failed attempt")
    export(bridge.grpc_endpoint, spans_request(100, 4))
    upstream.wait_for_calls(4)
    assert set(upstream.calls_by_id()) == ids(100, 4)
    tries: dict[str, int] = {}
    for attempt in upstream.attempts:
        if attempt.reason == "fail_project":
            for cid in attempt.call_ids:
                tries[cid] = tries.get(cid, 0) + 1
    # Each consumer may have taken a batch before the first failure was known; of those, one is retried
    # and the others went back to the queue after one attempt. No other batch was tried.
    assert len(tries) <= 2
    assert sum(1 for n in tries.values() if n > 1) <= 1
    upstream.fail_project("acme/broken", None)
    assert_delivered_once(upstream, ids(100, 4) | ids(0, 6))


def test_a_request_larger_than_the_whole_queue_is_refused_for_good(upstream, start_bridge):
    # Retrying could never succeed, so no "retry later": RESOURCE_EXHAUSTED without RetryInfo, which OTLP
    # exporters do not retry. The bridge keeps serving smaller requests.
    settings = bridge_settings(upstream, exporter={"queue": {"max_bytes": 30_000}, "batch": {"max_bytes": 20_000}})
    bridge = start_bridge(settings)
    with pytest.raises(grpc.RpcError) as refused:
        export(bridge.grpc_endpoint, spans_request(0, 40, payload=1000))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than all of it (exporter.queue.max_bytes = 30000)" in refused.value.details()
    status = rpc_status.from_call(refused.value)
    assert status is not None and list(status.details) == []
    assert total(bridge.bridge.metrics.refused_spans, reason=("too_large",)) == 40
    export(bridge.grpc_endpoint, spans_request(100, 2))
    assert_delivered_once(upstream, ids(100, 2))


def test_shutdown_delivers_what_it_can_in_memory(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, exporter={"batch": {"flush_interval": "1h"}}))
    export(bridge.grpc_endpoint, spans_request(0, 7))
    assert upstream.calls == []  # lingering: the batch is not full
    bridge.stop()  # flushes without lingering
    assert_delivered_once(upstream, ids(0, 7))


@pytest.mark.parametrize("durable", [False, True])
def test_shutdown_with_the_upstream_down_ends_within_shutdown_timeout(upstream, start_bridge, tmp_path, durable, caplog):
    caplog.set_level("INFO")
    queue = {"directory": str(tmp_path / "queue")} if durable else {}
    bridge = start_bridge(bridge_settings(upstream, shutdown_timeout="500ms", exporter={"queue": queue}))
    upstream.set_down(True)
    export(bridge.grpc_endpoint, spans_request(0, 5))
    started = time.monotonic()
    bridge.stop()
    assert time.monotonic() - started < 3
    if durable:
        assert "kept in SQLite in" in caplog.text
        upstream.set_down(False)
        again = start_bridge(bridge_settings(upstream, exporter={"queue": queue}))
        assert_delivered_once(upstream, ids(0, 5))
        assert "resuming delivery of 5 calls" in caplog.text
        again.stop()
    else:
        assert "undelivered, and lost; set exporter.queue.directory" in caplog.text


def test_kill_9_and_restarts_lose_no_acknowledged_span(upstream, bridge_process, tmp_path):
    """Acknowledged while the upstream is down; SIGKILL; restart; SIGTERM; restart with the upstream up."""
    port = free_port()
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"shutdown_timeout: 1s\n"
        f"receiver: {{grpc: {{endpoint: '127.0.0.1:{port}'}}, http: null}}\n"
        f"exporter:\n"
        f"  weave: {{base_url: '{upstream.url}', api_key: '{API_KEY}'}}\n"
        f"  queue: {{directory: '{tmp_path / 'queue'}'}}\n"
        f"  batch: {{flush_interval: 50ms}}\n"
        f"  retry: {{initial_interval: 50ms, max_interval: 200ms}}\n"
        f"telemetry: {{endpoint: null}}\n"
    )
    upstream.set_down(True)

    first = bridge_process(config, port)
    for k in range(5):
        assert export(f"127.0.0.1:{port}", spans_request(20 * k, 20)).partial_success.rejected_spans == 0
    assert first.signal(signal.SIGKILL) == -signal.SIGKILL

    second = bridge_process(config, port)
    assert "resuming delivery of 100 calls" in second.log
    export(f"127.0.0.1:{port}", spans_request(100, 20))
    assert second.signal(signal.SIGTERM) == 0
    assert "120 calls" in second.log and "kept in SQLite in" in second.log

    upstream.set_down(False)
    third = bridge_process(config, port)
    assert_delivered_once(upstream, ids(0, 120))
    assert third.signal(signal.SIGTERM) == 0
    assert "resuming delivery of 120 calls" in third.log
