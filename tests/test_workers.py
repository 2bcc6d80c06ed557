"""receiver.workers: a supervisor and worker processes sharing the receiver ports. Behaviour, not speed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from conftest import API_KEY, free_port
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from spans import request, span

from otel_bridge.config import Settings, load_settings
from otel_bridge.errors import ConfigError
from otel_bridge.receiver.http import TRACES_PATH
from otel_bridge.supervisor import worker_settings

RESOURCE = {"wandb.entity": "e", "wandb.project": "p"}
CONNECTIONS = 16  # the kernel spreads connections, not requests: with 16, both workers get some


def _free_port_pair() -> int:
    """A port p with p + 1 free too: worker i serves telemetry on p + i."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def _config(tmp_path: Path, upstream_url: str, grpc_port: int, http_port: int, telemetry_port: int) -> Path:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""shutdown_timeout: 10s
receiver:
  workers: 2
  grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
  http: {{endpoint: "127.0.0.1:{http_port}"}}
exporter:
  weave: {{base_url: "{upstream_url}", api_key: "{API_KEY}"}}
  batch: {{flush_interval: 50ms}}
  queue: {{directory: "{tmp_path / 'queue'}"}}
telemetry: {{endpoint: "127.0.0.1:{telemetry_port}"}}
"""
    )
    return config


def _send(grpc_port: int, first_id: int, connections: int = CONNECTIONS) -> list[str]:
    """One Export of two spans on each of `connections` separate connections; the span ids sent."""
    ids = []
    for i in range(connections):
        span_ids = [(first_id + 2 * i + k).to_bytes(8, "big") for k in (0, 1)]
        # A fresh channel with its own option set is a new connection, not a shared subchannel.
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("test.connection", first_id + i)]) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            answer = stub.Export(request(*(span(f"s{id_.hex()}", span_id=id_) for id_ in span_ids), resource=RESOURCE), timeout=20)
        assert answer.partial_success.rejected_spans == 0
        ids.extend(id_.hex() for id_ in span_ids)
    return ids


def _accepted(telemetry_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{telemetry_port}/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(r'^otelbridge_receiver_accepted_spans_total\{[^}]*\} (\S+)$', text, re.M))


def _wait_for_log(bridge, pattern: str, timeout: float = 20) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, bridge.log)
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in the log:\n{bridge.log}")


def test_two_workers_share_the_ports_each_with_its_queue_and_sigterm_drains(tmp_path, upstream, bridge_process):
    grpc_port, http_port, telemetry_port = free_port(), free_port(), _free_port_pair()
    bridge = bridge_process(_config(tmp_path, upstream.url, grpc_port, http_port, telemetry_port), grpc_port)
    for index in (0, 1):
        _wait_for_log(bridge, rf"worker {index} serving")
    ids = _send(grpc_port, first_id=1)
    body = request(span("over-http", span_id=b"\x7f" * 8), resource=RESOURCE).SerializeToString()
    answer = httpx.post(
        f"http://127.0.0.1:{http_port}{TRACES_PATH}", content=body, headers={"Content-Type": "application/x-protobuf"}
    )
    assert answer.status_code == 200
    ids.append("7f" * 8)

    # Both workers took connections (each reports its own metrics on telemetry port + i), and every call arrived.
    accepted = [_accepted(telemetry_port), _accepted(telemetry_port + 1)]
    assert all(count > 0 for count in accepted), accepted
    assert sum(accepted) == len(ids)
    upstream.wait_for_calls(len(ids))
    assert sorted(upstream.calls_by_id()) == sorted(ids)
    assert sorted(p.name for p in (tmp_path / "queue").iterdir()) == ["worker-0", "worker-1"]

    assert bridge.signal(signal.SIGTERM) == 0
    assert "all workers stopped" in bridge.log
    upstream.assert_no_errors()


def test_a_worker_that_dies_is_named_and_restarted(tmp_path, upstream, bridge_process):
    grpc_port, http_port, telemetry_port = free_port(), free_port(), _free_port_pair()
    bridge = bridge_process(_config(tmp_path, upstream.url, grpc_port, http_port, telemetry_port), grpc_port)
    pid = int(_wait_for_log(bridge, r"worker 1 serving \(pid (\d+)\)").group(1))
    os.kill(pid, signal.SIGKILL)
    _wait_for_log(bridge, rf"worker 1 \(pid {pid}\) was killed by signal SIGKILL; restarting it")
    _wait_for_log(bridge, r"worker 1 serving \(pid (?!%d\))" % pid)
    ids = _send(grpc_port, first_id=1000)
    upstream.wait_for_calls(len(ids))
    assert bridge.signal(signal.SIGTERM) == 0


def test_a_worker_that_cannot_start_stops_the_supervisor_with_exit_1(tmp_path, upstream):
    grpc_port, http_port, telemetry_port = free_port(), free_port(), _free_port_pair()
    config = _config(tmp_path, upstream.url, grpc_port, http_port, telemetry_port)
    with socket.socket() as taken:  # worker 1's telemetry port
        taken.bind(("127.0.0.1", telemetry_port + 1))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "otel_bridge", "serve", "--config", str(config)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
    assert result.returncode == 1
    assert re.search(r"worker 1 \(pid \d+\) exited with code 1 before it was serving", result.stderr)
    assert f"127.0.0.1:{telemetry_port + 1} (telemetry.endpoint)" in result.stderr


def test_worker_settings_give_each_worker_its_queue_directory_and_telemetry_port():
    settings = Settings.model_validate(
        {
            "receiver": {"workers": 3, "grpc": {"endpoint": "0.0.0.0:4317"}},
            "exporter": {"queue": {"directory": "/var/lib/otel-bridge"}},
            "telemetry": {"endpoint": "[::]:13133"},
        }
    )
    worker = worker_settings(settings, 2)
    assert worker.exporter.queue.directory == "/var/lib/otel-bridge/worker-2"
    assert worker.telemetry.endpoint == "[::]:13135"
    assert worker.receiver == settings.receiver and worker.exporter.weave == settings.exporter.weave


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"receiver": {"workers": 0}}, "receiver.workers"),
        ({"receiver": {"workers": 2, "grpc": {"endpoint": "127.0.0.1:0"}}}, "has port 0"),
        ({"receiver": {"workers": 2}, "telemetry": {"endpoint": "127.0.0.1:65535"}}, "port + i"),
    ],
)
def test_workers_config_errors_name_the_key(section, message):
    path = Path("bad.yaml")
    path.write_text(yaml.safe_dump(section))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path)
