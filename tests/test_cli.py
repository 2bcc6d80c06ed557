"""The commands, run as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from conftest import free_port, wait_for_grpc
from jsonschema import Draft202012Validator, FormatChecker
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from spans import request, span

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "proto" / "calls-complete.schema.json").read_text())


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_bridge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def validate(body: dict) -> None:
    Draft202012Validator(SCHEMA, format_checker=FormatChecker()).validate(body)


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("otel-bridge ")


def test_check_config_prints_effective_config_with_secret_masked():
    result = run("check-config", env={"WANDB_API_KEY": "super-secret-key"})
    assert result.returncode == 0, result.stderr
    assert "super-secret-key" not in result.stdout + result.stderr
    assert "api_key: '**********'" in result.stdout
    assert "endpoint: 0.0.0.0:4317" in result.stdout


def test_check_config_reports_every_error_and_exits_2():
    result = run("check-config", "--config", str(Path(__file__).parent / "testdata" / "config" / "bad_values.yaml"))
    assert result.returncode == 2
    assert result.stderr.count("\n  - ") == 4
    assert "`receiver.grpc.endpoint`" in result.stderr and "`exporter.weave.project`" in result.stderr


def test_convert_reads_binary_protobuf_and_uses_project_flag(tmp_path):
    path = tmp_path / "request.pb"
    path.write_bytes(request(span("from protobuf")).SerializeToString())
    result = run("convert", "--project", "team/debug", str(path))
    assert result.returncode == 0, result.stderr
    (call,) = json.loads(result.stdout)["batch"]
    assert (call["op_name"], call["project_id"]) == ("from protobuf", "team/debug")


def test_convert_reports_rejected_spans_and_exits_1(tmp_path):
    path = tmp_path / "request.pb"
    path.write_bytes(request(span("no project")).SerializeToString())
    result = run("convert", str(path))
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"batch": []}
    assert "span has no project" in result.stderr


def test_convert_garbage_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"\xff\x00 definitely not otlp \x13")
    result = run("convert", str(path))
    assert result.returncode == 1
    assert "neither OTLP/JSON nor a binary protobuf" in result.stderr


def test_serve_without_api_key_writes_jsonl_and_exits_0_on_sigterm(tmp_path):
    port = free_port()
    out = tmp_path / "calls.jsonl"
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"receiver: {{grpc: {{endpoint: '127.0.0.1:{port}'}}, http: null}}\n"
        f"exporter: {{file: {{path: '{out}'}}, batch: {{flush_interval: 100ms}}}}\n"
        "telemetry: {endpoint: null}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_bridge", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WEAVE_PROJECT")},
    )
    try:
        wait_for_grpc(port, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            answer = stub.Export(
                request(span("a"), span("b", span_id=b"\x01" * 8), resource={"wandb.entity": "e", "wandb.project": "p"}),
                timeout=10,
            )
        assert answer.partial_success.rejected_spans == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read()
    assert f"sending calls to file {out}" in log and "no API key" in log
    lines = out.read_text().splitlines()
    calls = [call for line in lines for call in json.loads(line)["batch"]]
    for line in lines:
        validate(json.loads(line))
    assert sorted(c["op_name"] for c in calls) == ["a", "b"]


def test_serve_with_bad_config_exits_2_with_the_reason(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("exporter: {batch: {max_calls: 0}}\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "`exporter.batch.max_calls` (0)" in result.stderr


def test_serve_without_kafka_never_loads_librdkafka_and_limits_malloc_arenas(tmp_path):
    # A sidecar's idle memory is taken from its pod: librdkafka (~4 MB resident) is for receiver.kafka only,
    # and glibc's default of 8 malloc arenas per core kept ~10 MiB more resident under load.
    port = free_port()
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"receiver: {{grpc: {{endpoint: '127.0.0.1:{port}'}}, http: null}}\n"
        f"exporter: {{file: {{path: '{tmp_path / 'calls.jsonl'}'}}}}\n"
        "telemetry: {endpoint: null}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_bridge", "serve", "--config", str(config)],
        stderr=subprocess.DEVNULL, cwd=tmp_path, env=env,
    )
    try:
        wait_for_grpc(port, proc)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libpython" in maps or "python" in maps  # the map is the bridge's
        assert "rdkafka" not in maps
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # The limit is passed on to worker processes through the environment, and a user's own value wins.
    from otel_bridge import cli

    saved = os.environ.pop("MALLOC_ARENA_MAX", None)
    try:
        cli._limit_malloc_arenas()
        assert os.environ["MALLOC_ARENA_MAX"] == "2"
        os.environ["MALLOC_ARENA_MAX"] = "4"
        cli._limit_malloc_arenas()
        assert os.environ["MALLOC_ARENA_MAX"] == "4"
    finally:
        os.environ.pop("MALLOC_ARENA_MAX", None)
        if saved is not None:
            os.environ["MALLOC_ARENA_MAX"] = saved
