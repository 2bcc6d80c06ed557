"""What the bridge remembers of each trace, bounded: the status counts of the spans it saw, per parent, and
the (model, response id) pairs whose usage a span already reported.

Kept per trace in least-recently-active order. A trace is forgotten `idle_timeout` after its last span, or
earlier, least recently active first, when more than `max_spans` spans are remembered in all. Every entry is
keyed by the span it came from, so a request the exporter sends again (after a refused Export, or a
restart) changes nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["TraceMemory", "TraceState", "Counts"]

Counts = tuple[int, int]  # (success, error)


@dataclass(slots=True)
class TraceState:
    # parent span id -> child span id -> the child's counts (its own status plus its descendants')
    children: dict[str, dict[str, Counts]] = field(default_factory=dict)
    # (model, response id) -> the span id whose call carries that response's usage
    responses: dict[tuple[str, str], str] = field(default_factory=dict)
    spans: int = 0  # entries above, for the bound
    seen: float = 0.0


class TraceMemory:
    def __init__(self, *, idle_timeout: float, max_spans: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_timeout = idle_timeout
        self.max_spans = max_spans
        self._clock = clock
        self._traces: OrderedDict[str, TraceState] = OrderedDict()
        self.spans = 0
        self.forgotten_early = 0  # traces forgotten for max_spans before their idle_timeout

    def __len__(self) -> int:
        return len(self._traces)

    def trace(self, trace_id: str) -> TraceState:
        """The state of a trace, marked as active now."""
        now = self._clock()
        state = self._traces.get(trace_id)
        if state is None:
            state = self._traces[trace_id] = TraceState()
        else:
            self._traces.move_to_end(trace_id)
        state.seen = now
        self._forget(now)
        return state

    def added(self, state: TraceState, count: int = 1) -> None:
        state.spans += count
        self.spans += count
        while self.spans > self.max_spans and len(self._traces) > 1:
            self._pop_oldest()
            self.forgotten_early += 1

    def _forget(self, now: float) -> None:
        horizon = now - self.idle_timeout
        while self._traces:
            oldest = next(iter(self._traces.values()))
            if oldest.seen > horizon:
                break
            self._pop_oldest()

    def _pop_oldest(self) -> None:
        _, state = self._traces.popitem(last=False)
        self.spans -= state.spans
