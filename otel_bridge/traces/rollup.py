"""Per-trace changes to a call before it is queued: summary.status_counts, and usage counted once per model
response. Both work on the call as the mapping made it (a plain dict) and on the trace's memory.

status_counts, as the Weave SDK fills it: the call's own status plus the counts of its descendants, so the
server derives `descendant_error` for a call without an exception of its own whose count of errors is > 0.
The bridge adds the descendants it saw before the call (children end, and are exported, before their
parents); a child that arrives after its parent was queued is not counted in it.

Usage dedupe: two spans of one trace that report the same gen_ai.response.id for the same model are one
model response traced twice (anthropic >= 2 traces its own calls while an Anthropic instrumentation does
too). The span seen first keeps the usage; the later one keeps everything else and says where its usage
was counted. First seen, because that call may already be delivered, and nothing waits for a second one.
"""

from __future__ import annotations

from typing import Any

from otel_bridge.traces.memory import TraceMemory, TraceState

__all__ = ["roll_up_status", "dedupe_usage", "USAGE_COUNTED_ON"]

# call.attributes key naming the span whose call carries this call's usage.
USAGE_COUNTED_ON = "usage_counted_on_span"


def roll_up_status(call: dict[str, Any], state: TraceState, memory: TraceMemory) -> None:
    success, error = (0, 1) if call["exception"] else (1, 0)
    span_id = call["id"]
    for child_success, child_error in state.children.get(span_id, {}).values():
        success += child_success
        error += child_error
    call["summary"]["status_counts"] = {"success": success, "error": error}
    parent_id = call["parent_id"]
    if parent_id is not None:
        siblings = state.children.setdefault(parent_id, {})
        if span_id not in siblings:
            memory.added(state)
        siblings[span_id] = (success, error)


def dedupe_usage(call: dict[str, Any], response_id: str, state: TraceState, memory: TraceMemory) -> bool:
    """Whether usage was taken off the call, counted on another span."""
    usage = call["summary"].get("usage")
    if not usage:
        return False
    span_id = call["id"]
    removed = False
    for model in list(usage):
        key = (model, response_id)
        owner = state.responses.get(key)
        if owner is None:
            state.responses[key] = span_id
            memory.added(state)
        elif owner != span_id:
            del usage[model]
            call["attributes"][USAGE_COUNTED_ON] = owner
            removed = True
    if not usage:
        del call["summary"]["usage"]
    return removed
