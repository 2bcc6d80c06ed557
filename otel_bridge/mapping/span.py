"""One span -> one completed call (a plain dict in the shape of CompletedCallSchemaForInsert).

Each call field is computed in one place below, from the span, its attribute tree and the rule tables.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import orjson

from otel_bridge.decode.decoded import Span
from otel_bridge.errors import RejectedSpan
from otel_bridge.mapping import content
from otel_bridge.mapping.dump import span_dump
from otel_bridge.mapping.lookup import as_bool, as_int, as_str, find, first, first_of_each, first_present, iso_time
from otel_bridge.mapping.rewrite import rewrite
from otel_bridge.mapping.rules import Rules
from otel_bridge.mapping.usage import usage
from otel_bridge.decode.otlp import short_hex

__all__ = ["map_span", "op_name"]

MAX_OP_NAME_LENGTH = 128
MAX_DISPLAY_NAME_LENGTH = 1024
_STATUS_ERROR = 2


def op_name(name: str) -> str:
    """A name of at most 128 characters: longer names keep their start plus `:` and 4 hex of sha256."""
    if not name:
        return "unnamed_span"
    if len(name) <= MAX_OP_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:4]
    return f"{name[: MAX_OP_NAME_LENGTH - 5]}:{digest}"


def _ids(span: Span) -> tuple[str, str, str | None]:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16:
        raise RejectedSpan(f"invalid trace_id {short_hex(trace_id)!r}: {len(trace_id)} bytes, must be 16")
    if not any(trace_id):
        raise RejectedSpan("invalid trace_id: all zeros")
    if len(span_id) != 8:
        raise RejectedSpan(f"invalid span_id {short_hex(span_id)!r}: {len(span_id)} bytes, must be 8")
    if not any(span_id):
        raise RejectedSpan("invalid span_id: all zeros")
    if not parent:
        parent_id = None
    elif len(parent) != 8:
        raise RejectedSpan(f"invalid parent_span_id {short_hex(parent)!r}: {len(parent)} bytes, must be empty or 8")
    elif not any(parent):
        parent_id = None  # some SDKs send a root's parent as 8 zero bytes
    else:
        parent_id = parent.hex()
    return trace_id.hex(), span_id.hex(), parent_id


# Epoch numbers by magnitude, as a count of (seconds, ms, µs) up to these bounds, else nanoseconds: 1e11 s
# is the year 5138, 1e11 ms 1973, so the ranges do not overlap for any time a span can have.
_EPOCH_UNITS = ((1e11, 1_000_000_000), (1e14, 1_000_000), (1e17, 1_000))
_MAX_NANOS = 2**63 - 1


def _override_time(value: Any) -> int | None:
    """An override time -> unix nanoseconds: epoch seconds, ms, µs or ns (int or float, by magnitude) or an
    RFC 3339 / ISO 8601 string, what Weave's try_parse_timestamp reads. None when it is none of these."""
    kind = type(value)
    if kind is int or kind is float:
        if not (math.isfinite(value) and value > 0):
            return None
        factor = next((factor for bound, factor in _EPOCH_UNITS if value < bound), 1)
        nanos = value * factor if kind is int else int(value * factor)
        return nanos if nanos <= _MAX_NANOS else None
    if kind is str:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
        nanos = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
        return nanos if 0 < nanos <= _MAX_NANOS else None
    return None


def _times(span: Span, tree: dict[str, Any], rules: Rules, warnings: Counter) -> tuple[int, int]:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start == 0:
        raise RejectedSpan("start_time_unix_nano is missing (0)")
    if end == 0:
        raise RejectedSpan("end_time_unix_nano is missing (0): only finished spans can become calls")
    overrides = []
    for sources, own in ((rules.started_at, start), (rules.ended_at, end)):
        value = first_present(tree, sources) if sources else None
        moment = None if value is None else _override_time(value)
        if value is not None and moment is None:
            warnings["override_time"] += 1
        overrides.append(own if moment is None else moment)
    if overrides[1] >= overrides[0]:
        start, end = overrides
    else:
        # Overrides that would end the call before it starts are refused: the span's own times stay.
        warnings["override_time"] += 1
    # A clock skewed backwards must not produce a call that ends before it starts; otel_dump keeps the
    # times as sent.
    return start, max(start, end)


def _exception_field(tree: dict[str, Any], name: str) -> str | None:
    """exception.type or exception.message of an exception event, when a string (kept whole past a depth
    limit of 1)."""
    exception = tree.get("exception")
    value = exception.get(name) if type(exception) is dict else tree.get(f"exception.{name}")
    return value if type(value) is str else None


def _exception_event(span: Span) -> str | None:
    """The first exception event's `type: message` (or the one of them it has)."""
    for event in span.events:
        if event["name"] == "exception":
            event_tree = event["attributes"]
            kind, message = _exception_field(event_tree, "type"), _exception_field(event_tree, "message")
            if kind and message:
                return f"{kind}: {message}"
            if kind or message:
                return kind or message
    return None


def _detail_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _exception(span: Span, tree: dict[str, Any], rules: Rules) -> str | None:
    """Non-empty for every ERROR span: an empty string reads back as success upstream. Without an exception
    event, the status message or error.type may be a code only (TOOL_ERROR): the error's text from
    `exception_details` follows it."""
    if span.status_code != _STATUS_ERROR:
        return None
    event = _exception_event(span)
    if event is not None:
        return span.status_message or event
    said = span.status_message or as_str(first(tree, rules.exception))
    detail = _detail_text(first(tree, rules.exception_details))
    if detail is None or (said is not None and detail in said):
        return said or "error"
    return f"{said}: {detail}" if said else detail


def _is_turn(tree: dict[str, Any], rules: Rules, parent_id: str | None) -> bool:
    """The first is_turn source that is set decides: a boolean as it is, any other value means a turn.
    None set: a trace's root span with a root_turn source is a turn."""
    for _, path in rules.is_turn:
        if path[0] in tree:
            value = find(tree, path)
            explicit = as_bool(value)
            if explicit is not None:
                return explicit
            if value:
                return True
    return parent_id is None and first(tree, rules.root_turn) is not None


def _thread(tree: dict[str, Any], rules: Rules, span_id: str, parent_id: str | None) -> tuple[str | None, str | None]:
    thread_id = as_str(first(tree, rules.thread_id))
    if thread_id is None:
        return None, None
    return thread_id, span_id if _is_turn(tree, rules, parent_id) else None


def _display_name(tree: dict[str, Any], rules: Rules) -> str | None:
    name = as_str(first(tree, rules.display_name))
    if name is not None and len(name) > MAX_DISPLAY_NAME_LENGTH:
        name = name[: MAX_DISPLAY_NAME_LENGTH - 3] + "..."
    return name


def _wb_run_id(tree: dict[str, Any], rules: Rules, project_id: str) -> str | None:
    run_id = as_str(first(tree, rules.wb_run_id))
    if run_id is not None and "/" not in run_id and ":" not in run_id:
        run_id = f"{project_id}/{run_id}"  # a bare run id belongs to the span's project
    return run_id


def _has_output(output: Any) -> bool:
    # As Weave's own ingestion: a number found (0 included) counts, an empty value does not.
    return type(output) in (int, bool) or bool(output)


def map_span(
    span: Span,
    *,
    project_id: str,
    resource: dict[str, Any],
    scope: dict[str, Any],
    rules: Rules,
    warnings: Counter | None = None,
) -> dict[str, Any]:
    """A decoded span (decode.py: limits and redaction already applied) -> a completed call. Raises
    RejectedSpan with the reason when it cannot be one. The rules' rewrites change the span's attribute
    trees in place, so its otel_dump holds them as rewritten. Values the mapping could not use (a token
    count that is no count, an unreadable override time) are counted in `warnings` by kind."""
    if warnings is None:
        warnings = Counter()
    trace_id, span_id, parent_id = _ids(span)
    tree = span.attributes
    content_events = rules.content_events
    # Of the trees the rules read: the span's and its content events'.
    keys = span.attribute_keys
    events = []
    for event, event_keys in zip(span.events, span.event_attribute_keys):
        name = event["name"]
        events.append((name, event["attributes"]))
        if event_keys and name in content_events:
            keys = keys + event_keys
    if rules.drop or rules.rename:
        rewrite(tree, rules)
        for _, event_tree in events:
            rewrite(event_tree, rules)
    else:
        rules = rules.narrowed(tuple(keys))
    start, end = _times(span, tree, rules, warnings)
    name = op_name(as_str(first(tree, rules.op_name)) or span.name)

    # Content events are read only when the span's own attributes lack something (see content.py).
    trees = (tree, *(t for event_name, t in events if event_name in rules.content_events)) if events else (tree,)
    inputs = content.inputs(trees, rules)
    output = content.output(trees, rules)
    if (inputs is None or output is None) and events:
        sent, received = content.messages(events, rules)
        inputs = inputs if inputs is not None else sent
        output = output if output is not None else received
    inputs = {} if inputs is None else inputs
    output = {} if output is None else output

    attributes = first_of_each(trees, rules.attributes)
    token_usage = usage(tree, span.kind, attributes, rules, warnings)
    custom = first(tree, rules.custom_attributes)
    if type(custom) is dict:
        attributes.update(custom)
    if not attributes and not inputs and not _has_output(output) and not token_usage:
        attributes = tree  # nothing recognised: keep every attribute where users look first

    summary: dict[str, Any] = {
        "weave": {
            "status": "error" if span.status_code == _STATUS_ERROR else "success",
            "latency_ms": (end - start) // 1_000_000,
            "trace_name": name,
        }
    }
    if token_usage:
        summary["usage"] = token_usage

    started_at, ended_at = iso_time(start), iso_time(end)
    call: dict[str, Any] = {
        "project_id": project_id,
        "id": span_id,
        "trace_id": trace_id,
        "parent_id": parent_id,
        "op_name": name,
        "started_at": started_at,
        "ended_at": ended_at,
        "attributes": attributes,
        "inputs": inputs,
        "output": output,
        "exception": _exception(span, tree, rules),
        "summary": summary,
    }
    optional = {
        "display_name": _display_name(tree, rules),
        "wb_run_id": _wb_run_id(tree, rules, project_id),
        "wb_run_step": as_int(first_present(tree, rules.wb_run_step)),
        "wb_run_step_end": as_int(first_present(tree, rules.wb_run_step_end)),
    }
    optional["thread_id"], optional["turn_id"] = _thread(tree, rules, span_id, parent_id)
    for key, value in optional.items():
        if value is not None:
            call[key] = value
    call["otel_dump"] = span_dump(
        span,
        # The times as sent: the same strings unless an attribute overrode the call's times.
        start_time=started_at if start == span.start_time_unix_nano else iso_time(span.start_time_unix_nano),
        end_time=ended_at if end == span.end_time_unix_nano else iso_time(span.end_time_unix_nano),
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        resource=resource,
        scope=scope,
    )
    return call
