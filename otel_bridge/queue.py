"""The queue between mapping and delivery. It is also the batch buffer: calls wait here, per project,
until a batch is full or has lingered `flush_interval`, so no call sits anywhere else.

    put(calls by project)  -> all or nothing; QueueFullError past max_bytes (backpressure)
    take(...)              -> a Batch of one project's oldest calls, held "in flight"
    ack(batch)             -> delivered or given up on: forget it
    nack(batch)            -> not delivered: back to the front of its project, for a later take
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from otel_bridge.errors import QueueFullError

__all__ = ["Batch", "MemoryQueue", "body_size"]

# {"batch":[ ... ]}
_BODY_OVERHEAD = len(b'{"batch":[]}')


def body_size(call_sizes: int, count: int) -> int:
    """Bytes of the request body holding `count` calls of `call_sizes` bytes in all."""
    return _BODY_OVERHEAD + call_sizes + max(count - 1, 0)


@dataclass(slots=True)
class Batch:
    project: str
    calls: list[bytes]
    nbytes: int = field(default=0)  # the calls' own bytes, not the body's

    def body(self) -> bytes:
        return b'{"batch":[' + b",".join(self.calls) + b"]}"


class MemoryQueue:
    """Calls per project in arrival order, bounded by the bytes they hold (queued and in flight)."""

    def __init__(self, *, max_bytes: int, retry_after: float = 1.0) -> None:
        self.max_bytes = max_bytes
        self._retry_after = retry_after
        # project -> deque of (enqueued at, call). Of the projects due, take() serves the one whose oldest
        # call waited longest (nacked calls count as oldest of all); ties go in dict order.
        self._pending: dict[str, deque[tuple[float, bytes]]] = {}
        self._pending_bytes = 0
        self._in_flight_bytes = 0
        self._changed = asyncio.Event()
        self._flushing = False

    @property
    def size_bytes(self) -> int:
        return self._pending_bytes + self._in_flight_bytes

    @property
    def size_calls(self) -> int:
        return sum(len(calls) for calls in self._pending.values())

    async def put(self, calls: dict[str, list[bytes]]) -> None:
        added = sum(len(call) for project_calls in calls.values() for call in project_calls)
        if self.size_bytes + added > self.max_bytes:
            raise QueueFullError(
                f"queue is full ({self.size_bytes} of {self.max_bytes} bytes, exporter.queue.max_bytes); retry later",
                retry_after=self._retry_after,
            )
        now = time.monotonic()
        for project, project_calls in calls.items():
            pending = self._pending.get(project)
            if pending is None:
                pending = self._pending[project] = deque()
            pending.extend((now, call) for call in project_calls)
        self._pending_bytes += added
        self._changed.set()

    def flush(self) -> None:
        """From now on, take() returns what there is at once, without lingering (used when draining)."""
        self._flushing = True
        self._changed.set()

    def _ready(self, max_calls: int, max_bytes: int, linger: float) -> tuple[str | None, float]:
        """The project to take from now (of those due, the one whose oldest call waited longest), else how
        long until one is due."""
        now = time.monotonic()
        wait = linger
        due: str | None = None
        due_since = 0.0
        for project, pending in self._pending.items():
            if not pending:
                continue
            oldest = pending[0][0]
            if (
                self._flushing
                or len(pending) >= max_calls
                or now - oldest >= linger
                or body_size(sum(len(c) for _, c in pending), len(pending)) >= max_bytes
            ):
                # Not the first due in dict order: a project left non-empty by a partial take keeps its
                # place there, and would starve the others while it stays full.
                if due is None or oldest < due_since:
                    due, due_since = project, oldest
                continue
            wait = min(wait, linger - (now - oldest))
        if due is not None:
            return due, 0.0
        return None, wait

    async def take(self, *, max_calls: int, max_bytes: int, linger: float) -> Batch:
        """Wait for a batch that is full or has waited `linger` seconds, and hold it in flight."""
        while True:
            project, wait = self._ready(max_calls, max_bytes, linger)
            if project is not None:
                return self._pop(project, max_calls, max_bytes)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=wait if self._has_pending() else None)
            except asyncio.TimeoutError:
                pass

    def _has_pending(self) -> bool:
        return any(self._pending.values())

    def _pop(self, project: str, max_calls: int, max_bytes: int) -> Batch:
        pending = self._pending[project]
        calls: list[bytes] = []
        nbytes = 0
        while pending and len(calls) < max_calls:
            call = pending[0][1]
            # A single call larger than max_bytes still goes, alone: the exporter decides what to do with it.
            if calls and body_size(nbytes + len(call), len(calls) + 1) > max_bytes:
                break
            pending.popleft()
            calls.append(call)
            nbytes += len(call)
        if not pending:
            del self._pending[project]  # re-created at the end: the next project in line goes first
        self._pending_bytes -= nbytes
        self._in_flight_bytes += nbytes
        return Batch(project, calls, nbytes)

    def ack(self, batch: Batch) -> None:
        self._in_flight_bytes -= batch.nbytes

    def nack(self, batch: Batch) -> None:
        """Return an undelivered batch to the front of its project, keeping the original order."""
        self._in_flight_bytes -= batch.nbytes
        pending = self._pending.pop(project := batch.project, None) or deque()
        pending.extendleft((0.0, call) for call in reversed(batch.calls))
        # Put the project first in line again: it holds the oldest calls.
        self._pending = {project: pending, **self._pending}
        self._pending_bytes += batch.nbytes
        self._changed.set()

    def empty(self) -> bool:
        return not self._has_pending() and self._in_flight_bytes == 0
