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

from otel_bridge.pipeline import Mapper
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
        exporter={"queue": {"max_bytes": 30_000, "max_project_share": 1}, "batch": {"max_bytes": 20_000}},
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
    # Larger than the room a refused 10-span request leaves (over 10,000 bytes are taken), so it is refused
    # whatever the exact size of the calls queued before it.
    padding = {"padding": "x" * 12_000}
    with provider.get_tracer("t").start_as_current_span("sent while full", attributes=padding) as sdk_span:
        pass
    provider.shutdown()
    sdk_id = format(sdk_span.get_span_context().span_id, "016x")
    assert "retrying in 1.00s" in caplog.text  # the SDK honoured RetryInfo

    wait_until(lambda: bridge.bridge.queue.size_calls == 0, message="the queue drained")
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


# --- what the upstream answers: bodies, redirects, proxies (issue 12 items 5, 11, 12, 16) ---------------------


def test_only_a_prefix_of_a_huge_error_body_is_read(upstream, start_bridge, tmp_path):
    from otel_bridge.exporter.weave import MAX_ANSWER_BYTES

    dead = tmp_path / "dead.jsonl"
    bridge = start_bridge(bridge_settings(upstream, exporter={"dead_letter": {"path": str(dead)}}))
    # A proxy's error page of 256 MiB (1.5 GB took the bridge to 6.5 GB of memory when read whole).
    upstream.fail_next(1, status=400, body=b"<html>bad request", filler_bytes=256 * 2**20)
    export(bridge.grpc_endpoint, spans_request(0, 3))
    metrics = bridge.bridge.metrics
    wait_until(lambda: total(metrics.dead_lettered_calls) == 3, message="3 dead letters")
    # The upstream's handler records what it sent once its write fails, which may be after the bridge has
    # dead-lettered the calls.
    wait_until(lambda: upstream.answer_bytes_sent, message="the upstream's count of what it sent")
    (sent,) = upstream.answer_bytes_sent
    assert sent < 16 * 2**20  # what the socket buffers took before the bridge closed the connection
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert lines[0]["answer"].startswith("<html>bad request")
    assert len(lines[0]["answer"].encode()) <= MAX_ANSWER_BYTES
    export(bridge.grpc_endpoint, spans_request(10, 2))  # and the next batch is delivered as usual
    assert_delivered_once(upstream, ids(10, 2))


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_same_origin_redirect_is_followed_with_the_credentials(upstream, start_bridge, status, caplog):
    bridge = start_bridge(bridge_settings(upstream))
    upstream.fail_next(1, status=status, headers={"Location": "/v2/acme/agents/calls/complete?moved=1"})
    export(bridge.grpc_endpoint, spans_request(0, 4))
    assert_delivered_once(upstream, ids(0, 4))
    assert [a.status for a in upstream.attempts] == [status, 200]
    assert total(bridge.bridge.metrics.dead_lettered_calls) == 0
    assert f"answered {status} redirecting to {upstream.url}/v2/acme/agents/calls/complete?moved=1" in caplog.text


def test_a_redirect_to_another_origin_is_retried_and_gets_no_credentials(upstream, start_bridge, caplog):
    from upstream import UpstreamServer

    with UpstreamServer(api_key=API_KEY) as elsewhere:
        bridge = start_bridge(bridge_settings(upstream))
        location = f"{elsewhere.url}/v2/acme/agents/calls/complete"
        upstream.fail_next(2, status=307, headers={"Location": location})
        export(bridge.grpc_endpoint, spans_request(0, 4))
        assert_delivered_once(upstream, ids(0, 4))  # the third try, when the redirect is gone
        assert [a.status for a in upstream.attempts] == [307, 307, 200]
        assert elsewhere.attempts == []
        assert f"redirecting to {location}: not followed, another origin would receive the API key" in caplog.text
        assert total(bridge.bridge.metrics.dead_lettered_calls) == 0


def test_a_303_or_a_redirect_loop_is_retried_not_dead_lettered(upstream, start_bridge, caplog):
    caplog.set_level("DEBUG", "otel_bridge.exporter")  # a batch's later failures are logged at DEBUG
    bridge = start_bridge(bridge_settings(upstream, exporter={"weave": {"max_redirects": 2}}))
    upstream.fail_next(1, status=303, headers={"Location": "/v2/acme/agents/calls/complete"})
    upstream.fail_next(3, status=308, headers={"Location": "/v2/acme/agents/calls/complete"})
    export(bridge.grpc_endpoint, spans_request(0, 2))
    assert_delivered_once(upstream, ids(0, 2))
    assert [a.status for a in upstream.attempts] == [303, 308, 308, 308, 200]
    assert "answered 303" in caplog.text and "not a redirect a POST can follow" in caplog.text
    assert "redirected more than 2 times (exporter.weave.max_redirects)" in caplog.text
    assert total(bridge.bridge.metrics.dead_lettered_calls) == 0


def test_a_200_that_is_not_json_is_not_counted_as_delivered(upstream, start_bridge, caplog):
    bridge = start_bridge(bridge_settings(upstream))
    portal = b"<html><body>Please log in to the guest Wi-Fi</body></html>"
    upstream.fail_next(2, status=200, headers={"Content-Type": "text/html"}, body=portal)
    export(bridge.grpc_endpoint, spans_request(0, 3))
    assert_delivered_once(upstream, ids(0, 3))
    assert [a.status for a in upstream.attempts] == [200, 200, 200]
    assert "answered 200 with a body that is not JSON (text/html" in caplog.text
    metrics = bridge.bridge.metrics
    wait_until(lambda: total(metrics.sent_calls) == 3, message="sent_calls == 3")
    assert total(metrics.retried_calls) == 6  # 3 calls, retried twice


def test_credentials_echoed_by_the_upstream_are_masked_in_logs_and_dead_letters(upstream, start_bridge, tmp_path, caplog):
    import base64

    dead = tmp_path / "dead.jsonl"
    bridge = start_bridge(bridge_settings(upstream, exporter={"dead_letter": {"path": str(dead)}}))
    upstream.fail_next(1, status=400, echo_headers=True)
    upstream.fail_next(1, status=500, echo_headers=True)
    export(bridge.grpc_endpoint, spans_request(0, 2))
    metrics = bridge.bridge.metrics
    wait_until(lambda: total(metrics.dead_lettered_calls) == 2, message="2 dead letters")
    token = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    written = dead.read_text()
    assert "request_headers" in written and "[MASKED]" in written
    for text in (written, caplog.text):
        assert token not in text and API_KEY not in text


def test_a_password_in_base_url_is_masked_at_start_and_in_check_config(upstream, start_bridge, tmp_path, caplog):
    import logging
    import subprocess
    import sys

    base_url = upstream.url.replace("http://", "http://proxyuser:s3cr3t-pw@")
    with caplog.at_level(logging.INFO):
        bridge = start_bridge(bridge_settings(upstream, exporter={"weave": {"base_url": base_url}}))
        export(bridge.grpc_endpoint, spans_request(0, 1))
        assert_delivered_once(upstream, ids(0, 1))
    assert "proxyuser:***@127.0.0.1" in caplog.text and "s3cr3t-pw" not in caplog.text
    config = tmp_path / "bridge.yaml"
    config.write_text(f"exporter:\n  weave:\n    base_url: {base_url}\n")
    out = subprocess.run(
        [sys.executable, "-m", "otel_bridge", "check-config", "--config", str(config)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "proxyuser:***@127.0.0.1" in out.stdout and "s3cr3t-pw" not in out.stdout + out.stderr


# --- a project the upstream refuses, a long Retry-After (issue 12 items 7, 10) --------------------------------


def test_a_refused_project_never_stops_the_others(upstream, start_bridge):
    # 30 requests of ~11 KB for acme/open pass through a queue of 200 KB (a share of 100 KB each).
    settings = bridge_settings(upstream, exporter={"queue": {"max_bytes": 200_000}, "batch": {"max_bytes": 20_000}})
    bridge = start_bridge(settings)
    upstream.fail_project("acme/locked", 403)
    export(bridge.grpc_endpoint, spans_request(0, 5, project="acme/locked"))
    metrics = bridge.bridge.metrics
    wait_until(lambda: metrics.registry.get_sample_value("otelbridge_exporter_blocked_projects") == 1, message="blocked")
    # While blocked, its spans are refused at the receiver, so the queue never fills with them ...
    with pytest.raises(grpc.RpcError) as refused:
        export(bridge.grpc_endpoint, spans_request(10, 5, project="acme/locked"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "5 spans for acme/locked: the upstream refuses this project's API key (401/403)" in refused.value.details()
    mixed = trace_request_of(spans_request(20, 3, project="acme/locked"), spans_request(100, 3, project="acme/open"))
    answer = export(bridge.grpc_endpoint, mixed)
    assert answer.partial_success.rejected_spans == 3 and "acme/locked" in answer.partial_success.error_message
    # ... and however long it lasts, every other project keeps flowing.
    for k in range(1, 31):
        assert export(bridge.grpc_endpoint, spans_request(100 + 10 * k, 10, project="acme/open")).partial_success.rejected_spans == 0
        upstream.wait_for_calls(3 + 10 * k)
    assert_delivered_once(upstream, ids(100, 3) | ids(110, 300))
    # Re-probed every exporter.retry.max_interval: once the key may write again, its kept calls arrive.
    upstream.fail_project("acme/locked", None)
    upstream.wait_for_calls(303 + 5)
    assert set(upstream.calls_by_id()) == ids(0, 5) | ids(100, 3) | ids(110, 300)
    wait_until(lambda: not bridge.bridge.queue.blocked("acme/locked"), message="unblocked")
    export(bridge.grpc_endpoint, spans_request(40, 2, project="acme/locked"))
    upstream.wait_for_calls(303 + 7)
    assert total(metrics.refused_spans, reason=("project_refused",)) == 8


def trace_request_of(*requests):
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[rs for r in requests for rs in r.resource_spans])


@pytest.mark.parametrize("retry_after", ["2", "http-date"])
def test_a_retry_after_past_the_deadline_keeps_the_calls(upstream, start_bridge, tmp_path, retry_after, caplog):
    import email.utils

    dead = tmp_path / "dead.jsonl"
    settings = bridge_settings(upstream, exporter={"retry": {"max_elapsed_time": "300ms"}, "dead_letter": {"path": str(dead)}})
    bridge = start_bridge(settings)
    if retry_after == "http-date":
        retry_after = email.utils.formatdate(time.time() + 3, usegmt=True)
    upstream.fail_next(1, status=429, headers={"Retry-After": retry_after})
    export(bridge.grpc_endpoint, spans_request(0, 4))
    wait_until(lambda: upstream.attempts, message="the throttled attempt")  # acme/agents gets the 429
    export(bridge.grpc_endpoint, spans_request(50, 2, project="acme/other"))  # not held up meanwhile
    assert_delivered_once(upstream, ids(50, 2))
    assert_delivered_once(upstream, ids(0, 4) | ids(50, 2))
    throttled = upstream.attempts[0]
    (accepted,) = [a for a in upstream.attempts if a.status == 200 and span_id(0).hex() in a.call_ids]
    assert throttled.status == 429 and accepted.at - throttled.at >= 1.0
    assert total(bridge.bridge.metrics.dead_lettered_calls) == 0 and not dead.exists()
    assert "(Retry-After), past the retry deadline" in caplog.text


def test_a_bridge_stops_while_a_project_waits_out_a_retry_after(upstream, start_bridge):
    # The consumers wait in the queue while the project is paused; stopping must cancel them (asyncio.wait_for
    # swallowed that cancellation, and stop() hung until the harness gave up).
    bridge = start_bridge(bridge_settings(upstream, exporter={"retry": {"max_elapsed_time": "300ms"}}))
    upstream.fail_next(1, status=429, headers={"Retry-After": "5"})
    export(bridge.grpc_endpoint, spans_request(0, 4))
    wait_until(lambda: upstream.attempts, message="the throttled attempt")
    wait_until(lambda: bridge.bridge.queue.paused_projects("throttled"), message="the project paused")
    bridge.stop()  # the harness raises TimeoutError when stop() does not return


@pytest.mark.parametrize("bound", ["exporter.queue.max_bytes", "exporter.queue.max_project_share"])
def test_a_request_the_queue_cannot_take_is_refused_before_it_is_mapped(upstream, start_bridge, bound):
    """Room for a request's calls is held from admission to put, in the queue and in its project's share:
    one whose calls would not fit is refused before the mapping spends a core on it, also when its
    protobuf alone would fit."""
    first, second = spans_request(0, 10, payload=5000), spans_request(10, 10, payload=5000)
    probe = bridge_settings(upstream)
    mapped = Mapper.from_config(probe.mapping).map(first.SerializeToString(), header_project=None, default_project="")
    request_bytes = first.ByteSize()
    call_bytes = sum(len(call) for calls in mapped.calls.values() for call in calls)
    assert call_bytes > request_bytes
    # After the first request, the room left (in the queue, or in the project's half of it) is between
    # the second's protobuf and its calls.
    room = call_bytes + (request_bytes + call_bytes) // 2
    queue = {"max_bytes": room, "max_project_share": 1} if bound.endswith("max_bytes") else {"max_bytes": 2 * room, "max_project_share": 0.5}
    bridge = start_bridge(bridge_settings(upstream, exporter={"queue": queue, "batch": {"max_bytes": call_bytes}}))
    upstream.set_down(True)
    pipeline = bridge.bridge.pipeline
    maps = []
    unspied = pipeline.map

    def spied(*args, **kwargs):
        maps.append(1)
        return unspied(*args, **kwargs)

    pipeline.map = spied
    export(bridge.grpc_endpoint, first)
    held = bridge.bridge.queue.size_bytes
    assert request_bytes < room - held < held  # the room the test is about
    with pytest.raises(grpc.RpcError) as refused:
        export(bridge.grpc_endpoint, second)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert bound in refused.value.details()
    assert len(maps) == 1, "the refused request was mapped first"
    upstream.set_down(False)
    assert {c["id"] for c in upstream.wait_for_calls(10)} == ids(0, 10)
