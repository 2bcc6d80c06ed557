"""The per-trace stage: between the mapping and the queue, it sees every call of a trace that reaches this
bridge, in arrival order, and changes each one before it is serialized (rollup.py).

One `RequestPass` per Export: the mapping calls its `on_call` with each call (mapping.CallHook).
"""

from __future__ import annotations

import threading
from typing import Any

from otel_bridge.config import Traces
from otel_bridge.mapping.lookup import as_str, find
from otel_bridge.traces.memory import TraceMemory
from otel_bridge.traces.rollup import dedupe_usage, roll_up_status

__all__ = ["TraceStage", "RequestPass"]

_RESPONSE_ID = ("gen_ai", "response", "id")


class TraceStage:
    def __init__(self, config: Traces) -> None:
        self.config = config
        self.memory = TraceMemory(idle_timeout=config.idle_timeout, max_spans=config.max_spans)
        # The mapping may run in worker threads (receivers offload CPU work); the memory is shared.
        self._lock = threading.Lock()

    def begin(self) -> RequestPass:
        return RequestPass(self)


class RequestPass:
    __slots__ = ("stage",)

    def __init__(self, stage: TraceStage) -> None:
        self.stage = stage

    def on_call(self, call: dict[str, Any], tree: dict[str, Any]) -> bool:
        stage = self.stage
        response_id = as_str(find(tree, _RESPONSE_ID)) if stage.config.dedupe_usage_by_response_id else None
        with stage._lock:
            state = stage.memory.trace(call["trace_id"])
            roll_up_status(call, state, stage.memory)
            if response_id:
                dedupe_usage(call, response_id, state, stage.memory)
        return True
