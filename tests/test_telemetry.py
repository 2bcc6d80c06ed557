"""The telemetry endpoint (/healthz, /readyz, /metrics), grpc.health.v1, logs, and start/stop as a whole."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from conftest import API_KEY, bridge_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from spans import request, span

from otel_bridge.app import Bridge
from otel_bridge.telemetry.logs import JsonFormatter, TextFormatter
from otel_bridge.receiver.grpc import TRACE_SERVICE

ROUTED = {"wandb.entity": "e", "wandb.project": "p"}


def _export(bridge, *spans) -> None:
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(request(*spans, resource=ROUTED), timeout=10)


def _readyz(bridge) -> httpx.Response:
    return httpx.get(bridge.telemetry_url + "/readyz", timeout=5)


def _wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_healthz_and_readyz_when_all_is_well(start_bridge):
    bridge = start_bridge(bridge_settings())
    health = httpx.get(bridge.telemetry_url + "/healthz", timeout=5)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert health.headers["server"] == "otel-bridge"  # not the Python and aiohttp versions
    ready = _readyz(bridge)
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["receivers"] == {
        "ok": True,
        "listening": {"OTLP/gRPC receiver": True, "OTLP/HTTP receiver": True},
    }
    assert body["checks"]["queue"]["ok"] and body["checks"]["upstream"]["ok"]


def test_readyz_fails_above_the_queue_high_water_mark_and_recovers(upstream, start_bridge):
    bridge = start_bridge(
        bridge_settings(
            upstream,
            exporter={"queue": {"max_bytes": 40000, "max_project_share": 1}, "batch": {"max_bytes": 40000}},
            telemetry={"readiness": {"queue_high_water": 0.25}},
        )
    )
    upstream.set_down(True)  # calls stay queued (in flight, retried)
    _export(bridge, span("small"))
    assert _readyz(bridge).status_code == 200
    _export(bridge, span("big", {"input.value": "x" * 6000}, span_id=b"\x01" * 8))
    answer = _readyz(bridge)
    assert answer.status_code == 503 and answer.json()["status"] == "not ready"
    queue = answer.json()["checks"]["queue"]
    assert queue["ok"] is False and queue["size_bytes"] > queue["high_water_bytes"] == 10000
    assert answer.json()["checks"]["upstream"]["ok"] is True  # within its grace still
    upstream.set_down(False)
    upstream.wait_for_calls(2)
    _wait_until(lambda: _readyz(bridge).status_code == 200)


def test_readyz_fails_when_the_upstream_is_unreachable_past_its_grace(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, telemetry={"readiness": {"upstream_grace": "300ms"}}))
    upstream.set_down(True)
    _export(bridge, span("waits"))
    answer = _wait_until(lambda: (r := _readyz(bridge)).status_code == 503 and r)
    check = answer.json()["checks"]["upstream"]
    assert check["ok"] is False and check["failing"] is True and check["seconds_since_answer"] > 0.3
    upstream.set_down(False)
    upstream.wait_for_calls(1)
    _wait_until(lambda: _readyz(bridge).status_code == 200)


def test_readiness_checks_can_be_left_out(upstream, start_bridge):
    # The sidecar example's settings: a slow Weave must not make the app's pod unready.
    bridge = start_bridge(
        bridge_settings(upstream, telemetry={"readiness": {"upstream_grace": 0, "queue_high_water": 1}})
    )
    upstream.set_down(True)
    _export(bridge, span("waits"))
    time.sleep(0.3)
    answer = _readyz(bridge)
    assert answer.status_code == 200 and "upstream" not in answer.json()["checks"]
    upstream.set_down(False)
    upstream.wait_for_calls(1)


def test_while_draining_probes_answer_and_readyz_says_not_ready(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    upstream.set_down(True)
    _export(bridge, span("pending"))
    stopping = bridge.begin_stop()
    answer = _wait_until(lambda: (r := _readyz(bridge)).status_code == 503 and r)
    assert answer.json()["checks"]["receivers"]["listening"] == {"OTLP/gRPC receiver": False, "OTLP/HTTP receiver": False}
    assert httpx.get(bridge.telemetry_url + "/healthz", timeout=5).status_code == 200
    upstream.set_down(False)
    stopping.result(30)
    assert [c["op_name"] for c in upstream.calls] == ["pending"]  # drained before the endpoint closed


def test_grpc_health_service(start_bridge):
    bridge = start_bridge(bridge_settings())
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", TRACE_SERVICE):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert TRACE_SERVICE == "opentelemetry.proto.collector.trace.v1.TraceService"


def _samples(bridge, accept: str = "") -> dict[tuple[str, tuple], float]:
    page = httpx.get(bridge.telemetry_url + "/metrics", headers={"Accept": accept}, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def test_metrics_page_has_the_collector_style_names_and_they_move(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, exporter={"queue": {"max_bytes": 20000, "max_project_share": 1}, "batch": {"max_bytes": 20000}}))
    before = _samples(bridge)
    assert before[("otelbridge_queue_capacity_bytes", ())] == 20000
    assert before[("otelbridge_build_info", (("version", __import__("otel_bridge").__version__),))] == 1
    assert before[("process_resident_memory_bytes", ())] > 0
    upstream.reject_ids(["0101010101010101"], status=400)  # refused for good: counted as send failed
    _export(bridge, span("lost", span_id=b"\x01" * 8))
    failed = ("otelbridge_exporter_send_failed_calls_total", (("reason", "refused"),))
    _wait_until(lambda: _samples(bridge).get(failed))
    _export(bridge, span("good"), span("again", span_id=b"\x02" * 8))
    upstream.wait_for_calls(2)
    after = _wait_until(lambda: (s := _samples(bridge))[("otelbridge_exporter_sent_calls_total", ())] == 2 and s)
    assert after[("otelbridge_receiver_accepted_spans_total", (("transport", "grpc"),))] == 3
    assert after[("otelbridge_receiver_request_duration_seconds_count", (("transport", "grpc"),))] == 2
    assert after[failed] == 1
    assert ("otelbridge_queue_size_bytes", ()) in after


def _readme_metrics() -> dict[str, set[str]]:
    """The README's metrics table: each metric name listed (as exposed) -> the label names its row gives."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "README.md").read_text()
    rows = text[text.index("| metric | labels | meaning |") :].split("\n\n", 1)[0].splitlines()[2:]
    table: dict[str, set[str]] = {}
    for row in rows:
        names, labels = row.split(" | ")[:2]
        # Label names are the backquoted words outside parentheses (inside them: the label's values).
        label_names = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", labels)))
        for name in re.findall(r"`([a-z_*]+)`", names):
            table[name] = label_names
    return table


def test_readme_lists_every_metric_with_its_labels_and_no_other():
    from otel_bridge.telemetry.metrics import Metrics

    from otel_bridge.sqlite_file import FileState

    metrics = Metrics()
    metrics.watch_files([FileState("queue")], lambda: 0)  # registered with a durable queue
    exposed: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        if family.name.startswith("process_"):
            continue
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        labels = {k for sample in family.samples for k in sample.labels} - {"le"}
        # A labelled family without samples yet: its label names come from the wrapper (prometheus_client keeps them).
        exposed[family.name + suffix] = labels
    for wrapper in vars(Metrics()).values():
        name = getattr(wrapper, "_name", None)
        if name and getattr(wrapper, "_labelnames", ()):
            exposed[name + {"counter": "_total"}.get(wrapper._type, "")] = set(wrapper._labelnames)
    documented = _readme_metrics()
    documented.pop("process_*")
    assert set(exposed) == set(documented), "README's metrics table and the bridge's metrics differ"
    for name, labels in exposed.items():
        assert documented[name] == labels, f"{name}: labels {sorted(labels)} in the code, {sorted(documented[name])} in README"


def test_metrics_speak_openmetrics_when_asked(start_bridge):
    bridge = start_bridge(bridge_settings())
    answer = httpx.get(
        bridge.telemetry_url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=5
    )
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.rstrip().endswith("# EOF")
    plain = httpx.get(bridge.telemetry_url + "/metrics", timeout=5)
    assert plain.headers["content-type"].startswith("text/plain")


def test_telemetry_endpoint_can_be_disabled(start_bridge):
    bridge = start_bridge(bridge_settings(telemetry={"endpoint": None}))
    assert bridge.bridge.telemetry is None


def test_start_is_all_or_nothing(upstream):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = bridge_settings(upstream, receiver={"http": {"endpoint": f"127.0.0.1:{port}"}})

        async def scenario() -> int:
            bridge = Bridge(settings)
            with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{port} \(receiver.http.endpoint\)"):
                await bridge.start()
            return bridge.grpc.port

        grpc_port = asyncio.run(scenario())
    with socket.socket() as again:
        again.bind(("127.0.0.1", grpc_port))  # the gRPC receiver that did start was stopped again


def _record(message: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("otel_bridge.test", logging.ERROR, __file__, 1, message, (), exc_info)


def test_log_formats_write_one_line_per_event():
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        exc_info = sys.exc_info()
    text = TextFormatter().format(_record("upstream said:\n<html>", exc_info))
    assert "\n" not in text and " ERROR otel_bridge.test: upstream said:\\n<html>" in text
    line = JsonFormatter().format(_record("upstream said:\n<html>", exc_info))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "otel_bridge.test"
    assert entry["message"] == "upstream said:\n<html>"
    assert "ValueError: first line\nsecond line" in entry["exception"]
    assert entry["time"].endswith("Z")


def test_serve_logs_json_lines_without_secrets(tmp_path):
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    grpc_port, http_port, telemetry_port = ports
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"receiver:\n"
        f"  grpc: {{endpoint: '127.0.0.1:{grpc_port}', auth: {{bearer_token: '${{env:BRIDGE_TOKEN}}'}}}}\n"
        f"  http: {{endpoint: '127.0.0.1:{http_port}', auth: {{bearer_token: '${{env:BRIDGE_TOKEN}}'}}}}\n"
        f"exporter: {{weave: {{base_url: 'http://127.0.0.1:9'}}, batch: {{flush_interval: 100ms}}}}\n"
        f"telemetry: {{endpoint: '127.0.0.1:{telemetry_port}', log_format: json, log_level: debug}}\n"
    )
    env = {**os.environ, "WANDB_API_KEY": API_KEY, "BRIDGE_TOKEN": "token-in-env"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_bridge", "serve", "--config", str(config)],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )
    try:
        def healthy() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            try:
                return httpx.get(f"http://127.0.0.1:{telemetry_port}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait_until(healthy, timeout=20)
        refused = httpx.post(
            f"http://127.0.0.1:{http_port}/v1/traces", content=b"", timeout=5,
            headers={"Content-Type": "application/x-protobuf", "Authorization": "Bearer token-in-env"},
        )
        assert refused.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = proc.stderr.read().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [e["message"] for e in entries]
    assert any(m.startswith("OTLP/HTTP receiver listening on 127.0.0.1:") and "(bearer token)" in m for m in messages)
    assert any(m.startswith("telemetry endpoint listening") for m in messages)
    assert "stopped" in messages
    for line in lines:
        assert API_KEY not in line and "token-in-env" not in line
