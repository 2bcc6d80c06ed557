"""Record what real agent frameworks export: `python3 tests/frameworks/record.py [NAME ...]` from the repo root.

For each NAME (default: every tests/frameworks/requirements/NAME.txt) it creates or updates the virtualenv
VENVS/NAME from those exact pins, starts the fake model APIs and the OTLP capture on 127.0.0.1, runs
tests/frameworks/agents/NAME.py in that virtualenv, waits for the exports to settle, and writes
tests/frameworks/recorded/NAME.json. Protobuf bodies are turned into OTLP/JSON (hex ids, as the Collector's
file exporter writes them) by google.protobuf.json_format in the framework's own virtualenv, which has it
through its OTLP exporter, so any python3 can run this script.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from capture import OtlpCapture  # noqa: E402
from fake_models import FakeModelServer  # noqa: E402

REQUIREMENTS = HERE / "requirements"
AGENTS = HERE / "agents"
RECORDED = HERE / "recorded"
AGENT_TIMEOUT = 300

# Runs in the framework's virtualenv: raw bodies (base64, in a JSON file) -> OTLP/JSON dicts on stdout.
CONVERT = r"""
import base64, json, sys
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
KINDS = {"traces": ExportTraceServiceRequest, "logs": ExportLogsServiceRequest, "metrics": ExportMetricsServiceRequest}
IDS = {"traceId", "spanId", "parentSpanId"}
def hex_ids(node):
    if isinstance(node, dict):
        return {k: base64.b64decode(v).hex() if k in IDS and isinstance(v, str) else hex_ids(v) for k, v in node.items()}
    if isinstance(node, list):
        return [hex_ids(v) for v in node]
    return node
out = []
for signal, body in json.load(open(sys.argv[1])):
    message = KINDS[signal]()
    message.ParseFromString(base64.b64decode(body))
    out.append(hex_ids(json_format.MessageToDict(message)))
json.dump(out, sys.stdout)
"""


def pinned_names(requirements: Path) -> list[str]:
    names = []
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0])
    return names


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def prepare_venv(name: str, venvs: Path) -> Path:
    venv = venvs / name
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS / f"{name}.txt")], check=True)
    return python


def frozen_versions(python: Path, names: list[str]) -> dict[str, str]:
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
    versions = {}
    for line in frozen.splitlines():
        if "==" in line:
            pkg, version = line.split("==", 1)
            versions[_normal(pkg)] = version
    return {n: versions.get(_normal(n), "?") for n in names}


def to_otlp_json(python: Path, captured: list, signal: str) -> list[dict]:
    bodies = [c for c in captured if c.signal == signal]
    out = [None] * len(bodies)
    raw = [(i, c) for i, c in enumerate(bodies) if not c.json]
    for i, c in enumerate(bodies):
        if c.json:
            out[i] = json.loads(c.body)
    if raw:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([(signal, base64.b64encode(c.body).decode()) for _, c in raw], f)
        try:
            done = subprocess.run([str(python), "-c", CONVERT, f.name], check=True, capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        for (i, _), message in zip(raw, json.loads(done.stdout)):
            out[i] = message
    return out


def record(name: str, venvs: Path) -> Path:
    python = prepare_venv(name, venvs)
    with FakeModelServer() as models, OtlpCapture() as capture:
        env = {
            **os.environ,
            "PYTHONPATH": str(HERE),
            "FAKE_OPENAI_BASE_URL": f"{models.base_url}/v1",
            "FAKE_ANTHROPIC_BASE_URL": models.base_url,
            "FAKE_GEMINI_BASE_URL": models.base_url,
            "OPENAI_API_KEY": "sk-fake",
            "ANTHROPIC_API_KEY": "sk-ant-fake",
            "GEMINI_API_KEY": "fake",
            "GOOGLE_API_KEY": "fake",
            "OTEL_EXPORTER_OTLP_ENDPOINT": capture.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": name,
        }
        run = subprocess.run([str(python), str(AGENTS / f"{name}.py")], env=env, capture_output=True, text=True, timeout=AGENT_TIMEOUT)
        capture.settle()
        if run.returncode != 0:
            sys.stderr.write(run.stdout + run.stderr)
            raise SystemExit(f"{name}: the agent failed (exit {run.returncode})")
        notes = run.stdout.strip()
        served = list(models.served)
        captured = list(capture.requests)
    recording = {
        "framework": name,
        "packages": frozen_versions(python, pinned_names(REQUIREMENTS / f"{name}.txt")),
        "recorded_at": datetime.date.today().isoformat(),
        "served": served,
        "traces": to_otlp_json(python, captured, "traces"),
        "logs": to_otlp_json(python, captured, "logs"),
        "notes": notes,
    }
    RECORDED.mkdir(exist_ok=True)
    path = RECORDED / f"{name}.json"
    path.write_text(json.dumps(recording, indent=1) + "\n")
    spans = sum(len(s.get("spans", [])) for t in recording["traces"] for r in t.get("resourceSpans", []) for s in r.get("scopeSpans", []))
    logs = sum(len(s.get("logRecords", [])) for t in recording["logs"] for r in t.get("resourceLogs", []) for s in r.get("scopeLogs", []))
    print(f"{name}: {len(served)} model responses, {spans} spans, {logs} log records -> {path.relative_to(HERE.parent.parent)}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="recordings to make (default: all of requirements/*.txt)")
    parser.add_argument("--venvs", type=Path, default=Path("/work/fwenvs"), help="where the framework virtualenvs live")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in REQUIREMENTS.glob("*.txt"))
    for name in names:
        record(name, args.venvs)


if __name__ == "__main__":
    main()
