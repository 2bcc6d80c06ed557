"""Log records -> the content of their span's call (OTEP 4430: GenAI instrumentations emit the messages,
choices and exceptions of a model call as log records correlated to its span, not as span events).

Which records join: GenAI events (event name `gen_ai.*`) that carry a trace and span id. Their content is
read with the mapping's own rule tables, as if they were the span's events: the
`gen_ai.client.inference.operation.details` record (a content event) fills inputs and output, the
one-per-message records (`gen_ai.user.message`, `gen_ai.choice`, ...) fill them where the span and the
details record did not; what the span itself says is never replaced. `gen_ai.client.operation.exception`
gives a call without an exception its exception. `gen_ai.evaluation.result` records are kept on the call,
in attributes `gen_ai.evaluation.results` (a list, in arrival order).
"""

from __future__ import annotations

from typing import Any

import orjson

from otel_bridge.decode.logs import LogRecord
from otel_bridge.mapping import content
from otel_bridge.mapping.rules import Rules

__all__ = ["joins", "attach", "record_json", "record_from_json", "EVALUATIONS_KEY"]

EVALUATION_EVENT = "gen_ai.evaluation.result"
EXCEPTION_EVENT = "gen_ai.client.operation.exception"
EVALUATIONS_KEY = "gen_ai.evaluation.results"


def joins(record: LogRecord) -> bool:
    """Whether the record is one the join delivers on its span's call."""
    return record.event_name.startswith("gen_ai.")


def record_json(record: LogRecord) -> bytes:
    """What the pending store keeps of a record: its name, time and tree."""
    return orjson.dumps([record.event_name, record.time_unix_nano, record.tree])


def record_from_json(data: bytes) -> tuple[str, int, dict[str, Any]]:
    name, time_unix_nano, tree = orjson.loads(data)
    return name, time_unix_nano, tree


def _exception(tree: dict[str, Any]) -> str | None:
    exception = tree.get("exception")
    if type(exception) is not dict:
        return None
    kind, message = exception.get("type"), exception.get("message")
    parts = [str(part) for part in (kind, message) if part]
    return ": ".join(parts) or None


def _empty(value: Any) -> bool:
    # As the mapping: a number found (0 included) is output; an empty value is not.
    return not value and type(value) not in (int, bool)


def attach(call: dict[str, Any], records: list[tuple[str, int, dict[str, Any]]], rules: Rules) -> None:
    """Put the records' content on the call (in place); `records` are (event name, time, tree)."""
    events = [(name, tree) for name, _, tree in sorted(records, key=lambda record: record[1])]
    trees = [tree for name, tree in events if name in rules.content_events]
    inputs = content.inputs(trees, rules) if trees else None
    output = content.output(trees, rules) if trees else None
    if inputs is None or output is None:
        sent, received = content.messages(events, rules)
        inputs = inputs if inputs is not None else sent
        output = output if output is not None else received
    if inputs and not call["inputs"]:
        call["inputs"] = inputs
    if output is not None and _empty(call["output"]):
        call["output"] = output
    for name, tree in events:
        if name == EVALUATION_EVENT:
            call["attributes"].setdefault(EVALUATIONS_KEY, []).append(tree)
        elif name == EXCEPTION_EVENT and not call["exception"]:
            exception = _exception(tree)
            if exception:
                call["exception"] = exception
                summary = call["summary"]
                summary["weave"]["status"] = "error"
                counts = summary.get("status_counts")
                if counts and counts["success"] > 0:  # its own status, counted as success when it arrived
                    counts["success"] -= 1
                    counts["error"] += 1
