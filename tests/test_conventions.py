"""Golden pairs: one OTLP/JSON file per convention beside the calls-complete body it must become.

Each pair runs twice: through `otel-bridge convert` (a real process), and through the real gRPC path
to a real upstream. The expected bodies were reviewed field by field; `otel-bridge convert FILE` drafts
one for a new fixture, to be reviewed the same way before it is committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from conftest import bridge_settings
from jsonschema import Draft202012Validator, FormatChecker
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from otel_bridge.decode.otlp import parse_otlp_json

ROOT = Path(__file__).resolve().parent.parent
OTLP = Path(__file__).resolve().parent / "testdata" / "otlp"
FIXTURES = sorted(path for path in OTLP.glob("*.json") if not path.name.endswith(".expected.json"))
VALIDATOR = Draft202012Validator(
    json.loads((ROOT / "proto" / "calls-complete.schema.json").read_text()), format_checker=FormatChecker()
)


def expected_body(fixture: Path) -> dict:
    return json.loads(fixture.with_suffix(".expected.json").read_text())


def test_every_fixture_has_its_expected_body() -> None:
    assert len(FIXTURES) >= 13
    for fixture in FIXTURES:
        assert fixture.with_suffix(".expected.json").exists(), fixture.name


@pytest.mark.parametrize("fixture", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_convert_prints_the_expected_body(fixture: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otel_bridge", "convert", str(fixture)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if key not in ("WEAVE_PROJECT", "WANDB_API_KEY")},
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    VALIDATOR.validate(body)
    assert body == expected_body(fixture)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_fixture_through_grpc_arrives_as_expected(fixture: Path, upstream, start_bridge) -> None:
    expected = {call["id"]: call for call in expected_body(fixture)["batch"]}
    bridge = start_bridge(bridge_settings(upstream))
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        answer = trace_service_pb2_grpc.TraceServiceStub(channel).Export(parse_otlp_json(fixture.read_bytes()), timeout=10)
    assert answer.partial_success.rejected_spans == 0, answer.partial_success.error_message
    upstream.wait_for_calls(len(expected))
    assert upstream.calls_by_id() == expected
    assert {request.project for request in upstream.requests} == {call["project_id"] for call in expected.values()}
