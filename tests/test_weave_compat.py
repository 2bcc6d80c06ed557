"""Differential test: Weave's own OTel converter (weave 0.53.12) and the bridge on the same spans.

Every field Weave's converter fills must be equal in the bridge's call, unless one of DIFFERENCES below
explains it; each of those is deliberate, has its reason (also listed in the README), and must still
occur, so the list cannot go stale. Spans Weave rejects are counted apart: the bridge must keep them.

Weave's converter runs in its own virtualenv (it pins its own dependencies), as a subprocess fed the
serialized requests: .ci/run creates `.venv-weave`; elsewhere set WEAVE_PYTHON to an interpreter with
weave==0.53.12 installed. Without one the test skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from otel_bridge.config import Redact
from otel_bridge.decode.limits import DEFAULT_LIMITS
from otel_bridge.mapping import DEFAULT_RULES
from otel_bridge.pipeline import map_request
from otel_bridge.mapping.usage import matches
from otel_bridge.decode.otlp import parse_otlp_json
from otel_bridge.decode.redact import compile_redaction

# The comparison is of mappings: redaction, which Weave's converter does not do, stays out of it.
NO_REDACTION = compile_redaction(Redact(default_rules=False))

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted(p for p in (ROOT / "tests" / "testdata" / "otlp").glob("*.json") if not p.name.endswith(".expected.json"))
# The real frameworks' requests (tests/frameworks/recorded/, see test_frameworks.py); they name no project.
RECORDINGS = sorted((ROOT / "tests" / "frameworks" / "recorded").glob("*.json"))
RECORDING_PROJECT = "team/frameworks"


def _requests() -> list[bytes]:
    """Every fixture's request, then every recorded framework's, as protobuf bytes."""
    requests = [parse_otlp_json(fixture.read_bytes()).SerializeToString() for fixture in FIXTURES]
    for recording in RECORDINGS:
        requests += [parse_otlp_json(json.dumps(t)).SerializeToString() for t in json.loads(recording.read_text())["traces"]]
    return requests
WEAVE_VERSION = "0.53.12"
MISSING = object()
Path_ = tuple[str, ...]


def _weave_python() -> str | None:
    explicit = os.environ.get("WEAVE_PYTHON")
    if explicit:
        return explicit
    local = ROOT / ".venv-weave" / "bin" / "python"
    return str(local) if local.exists() else None


@dataclass(frozen=True)
class Corpus:
    weave: list[dict[str, Any]]  # per span: {"call": ...} or {"error": ..., "id": ...}
    bridge: dict[str, dict[str, Any]]  # span id -> the bridge's call


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    python = _weave_python()
    if python is None:
        reason = (
            f"Weave's converter is not installed: python3 -m venv .venv-weave && "
            f".venv-weave/bin/pip install weave=={WEAVE_VERSION} (or set WEAVE_PYTHON); .ci/run does this"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    bridge: dict[str, dict[str, Any]] = {}
    job = []
    for request in _requests():
        mapped = map_request(
            request, header_project=None, default_project=RECORDING_PROJECT, rules=DEFAULT_RULES, limits=DEFAULT_LIMITS, redaction=NO_REDACTION
        )
        assert mapped.rejected == 0, mapped.error_message()
        (project_id,) = mapped.calls
        bridge.update((call["id"], call) for call in map(orjson.loads, mapped.calls[project_id]))
        job.append({"project_id": project_id, "request": base64.b64encode(request).decode()})
    result = subprocess.run(
        [python, str(ROOT / "tests" / "compat" / "weave_convert.py")],
        input=json.dumps({"requests": job}),
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", ""), "TZ": "UTC"},  # Weave's otel_dump times are local time
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["weave_version"] == WEAVE_VERSION
    return Corpus(weave=answer["results"], bridge=bridge)


# --- the deliberate differences ------------------------------------------------------------------------------


def _get(node: Any, path: Path_, *, into_lists: bool = False) -> Any:
    for part in path:
        if type(node) is dict and part in node:
            node = node[part]
        elif into_lists and type(node) is list and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def _instant(text: Any) -> datetime | None:
    if type(text) is not str:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # Weave ran with TZ=UTC


def _json_text_of(weave: Any, bridge: Any) -> bool:
    try:
        return type(weave) is str and weave != bridge and json.loads(weave) == bridge
    except ValueError:
        return False


def _times(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    if path not in (("started_at",), ("ended_at",), ("otel_dump", "start_time"), ("otel_dump", "end_time")):
        return False
    a, c = _instant(weave), _instant(bridge)
    return a is not None and c is not None and abs((a - c).total_seconds()) <= 1e-6


def _end_before_start(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return path in (("ended_at",), ("summary", "weave", "latency_ms")) and w["summary"]["weave"]["latency_ms"] < 0


def _exception(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return path == ("exception",) and weave == "" and bool(bridge)


def _exception_details(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return path == ("exception",) and bool(weave) and type(bridge) is str and bridge.startswith(f"{weave}: ")


def _more_conventions(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    if path in (("inputs",), ("output",), ("attributes",)):
        return weave == {} and bridge not in ({}, MISSING)
    # Weave recognised nothing and dumped every attribute; the bridge recognised the span
    return path[0] == "attributes" and w["attributes"] == w["otel_dump"]["attributes"] and b["attributes"] != (
        b["otel_dump"]["attributes"]
    )


def _rollup(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    kind_client = b["otel_dump"]["kind"] == "CLIENT"
    return path[:2] == ("summary", "usage") and bridge is MISSING and not kind_client and matches(
        b["otel_dump"]["attributes"], DEFAULT_RULES.usage_rollups
    )


def _one_spelling(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    current = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}.get(path[-1])
    return path[:2] == ("summary", "usage") and bridge is MISSING and current is not None and (
        _get(b, (*path[:-1], current)) == weave
    )


def _json_strings(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return _json_text_of(weave, bridge)


def _indexed_lists(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return path[0] == "otel_dump" and any(part.isdigit() for part in path) and _get(b, path, into_lists=True) == weave


def _indexed_attributes(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return path[0] == "attributes" and any(part.isdigit() for part in path) and _get(b, path, into_lists=True) == weave


def _empty_objects(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return weave == [] and bridge == {}


def _run_id(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return path == ("wb_run_id",) and type(weave) is str and weave.replace(":", "/", 1) == bridge


def _long_names(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return path in (("op_name",), ("summary", "weave", "trace_name")) and len(b["otel_dump"]["name"]) > 128


def _is_turn_string(path: Path_, weave: Any, bridge: Any, w: dict, b: dict) -> bool:
    return path == ("turn_id",) and bridge is MISSING and _get(b, ("otel_dump", "attributes", "wandb", "is_turn")) == "false"


@dataclass(frozen=True)
class Difference:
    name: str
    reason: str
    explains: Callable[[Path_, Any, Any, dict, dict], bool]


DIFFERENCES = [
    Difference("times", "times are the span's nanoseconds truncated to microseconds, in UTC; Weave goes through float "
               "seconds (1 µs apart about half the time) and writes otel_dump times in local time without a zone",
               _times),
    Difference("end before start", "a span that ends before it starts gets a zero-length call; Weave writes a "
               "negative latency", _end_before_start),
    Difference("exception", "an ERROR span's exception is never empty; Weave leaves it empty when the status has no "
               "message, and the call then reads back as a success", _exception),
    Difference("exception details", "an ERROR span whose status message is a code (Google ADK's TOOL_ERROR) and "
               "that has no exception event gets the error's text after it (exception_details: what the failing "
               "tool returned); Weave's exception is the status message alone", _exception_details),
    Difference("conventions Weave does not read", "content and metadata only in span events, tool-call attributes, "
               "OpenInference messages, MLflow span types, ...: Weave leaves inputs/output/attributes empty, or puts "
               "every attribute in attributes when it recognises nothing (they stay in otel_dump)", _more_conventions),
    Difference("usage of rollup spans", "spans that sum their children's model calls (Vercel AI SDK root calls, "
               "in-process agent runs) report no counts: Weave's statistics add up every OTel span's usage",
               _rollup),
    Difference("one spelling per count", "a span sending both prompt_tokens and input_tokens keeps input_tokens: "
               "Weave's statistics add the two", _one_spelling),
    Difference("JSON strings decoded", "a value that is a JSON string (MLflow writes every value as JSON) is decoded, "
               "as Weave already decodes JSON objects and arrays", _json_strings),
    Difference("indexed keys in otel_dump", "keys sent flattened with indexes (gen_ai.prompt.0.role), and kvlists "
               "keyed 0, 1, ..., are lists in otel_dump too; Weave makes them lists only in inputs/output", _indexed_lists),
    Difference("indexed keys in attributes", "the list, not Weave's {\"0\": ..., \"1\": ...}: keys sent with indexes "
               "(f.0, f.1) are a list in attributes as everywhere else in the call (inputs, output, otel_dump) and as "
               "Weave itself makes them under wandb.attributes; Weave keeps the dict only when it recognises nothing "
               "and puts every attribute in attributes", _indexed_attributes),
    Difference("empty JSON objects", "JSON content stays as sent; Weave turns empty objects in the content it finds "
               "into [] (its otel_dump shows the change too)", _empty_objects),
    Difference("wb_run_id", "a bare run id becomes entity/project/run_id, the external form calls/complete takes; "
               "Weave's converter runs behind the API and writes project:run", _run_id),
    Difference("long op_name", "names over 128 characters are cut at a fixed length before the hash suffix; Weave "
               "cuts at a delimiter", _long_names),
    Difference("wandb.is_turn \"false\"", "wandb.is_turn sent as the string \"false\" is false; Weave takes any "
               "non-empty string as true", _is_turn_string),
]


def _leaves(value: Any, path: Path_ = ()) -> Any:
    """(path, value) of every field Weave fills: dicts are walked, None is 'not filled', a list is one value."""
    if type(value) is dict and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif value is not None:
        yield path, value


@dataclass
class Comparison:
    compared: int = 0
    agreeing: int = 0
    spans: int = 0
    rejected_by_weave: int = 0
    explained: Counter = None  # difference name -> fields
    unexplained: list = None


def _compare(corpus: Corpus) -> Comparison:
    result = Comparison(explained=Counter(), unexplained=[])
    for item in corpus.weave:
        if "error" in item:
            result.rejected_by_weave += 1
            assert item["id"] in corpus.bridge, f"the bridge must keep span {item['id']}, which Weave rejects"
            continue
        weave_call = item["call"]
        bridge_call = corpus.bridge[weave_call["id"]]
        result.spans += 1
        for path, weave_value in _leaves(weave_call):
            result.compared += 1
            bridge_value = _get(bridge_call, path)
            if bridge_value == weave_value:
                result.agreeing += 1
                continue
            reason = next((d for d in DIFFERENCES if d.explains(path, weave_value, bridge_value, weave_call, bridge_call)), None)
            if reason is None:
                result.unexplained.append(
                    f"{weave_call['op_name']!r} {'.'.join(path)}: Weave {weave_value!r:.120} bridge "
                    f"{'(missing)' if bridge_value is MISSING else repr(bridge_value)[:120]}"
                )
            else:
                result.explained[reason.name] += 1
    return result


def test_bridge_agrees_with_weave_except_the_deliberate_differences(corpus: Corpus) -> None:
    result = _compare(corpus)
    print(
        f"\nWeave {WEAVE_VERSION} vs the bridge over {result.spans} spans ({len(FIXTURES)} fixtures): "
        f"{result.agreeing}/{result.compared} fields agree; {result.rejected_by_weave} spans Weave rejects "
        "are kept by the bridge"
    )
    for name, fields in result.explained.most_common():
        print(f"  {fields:4d} fields: {name}")
    assert not result.unexplained, "differences no deliberate difference explains:\n" + "\n".join(result.unexplained)
    stale = [d.name for d in DIFFERENCES if d.name not in result.explained]
    assert not stale, f"deliberate differences that no longer occur (remove them here and in the README): {stale}"
    assert result.rejected_by_weave > 0  # the scalar-beside-sub-keys spans (Sentry, edge cases)
    assert result.spans >= 40 and result.agreeing / result.compared > 0.8


def test_the_comparison_can_fail(corpus: Corpus) -> None:
    """A bridge call that differs in an unexplained way is reported."""
    first = next(item["call"] for item in corpus.weave if "call" in item)
    broken = Corpus(weave=[{"call": first}], bridge={first["id"]: {**corpus.bridge[first["id"]], "trace_id": "0" * 32}})
    assert any("trace_id" in line for line in _compare(broken).unexplained)
