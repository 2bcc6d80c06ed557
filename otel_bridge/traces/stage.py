"""The per-trace stage: between the mapping and the queue, it sees every call of a trace that reaches this
bridge, in arrival order, and every GenAI log record, and changes each call before it is queued.

    spans  -> mapping -> RequestPass.on_call: status_counts, usage once (rollup.py); log records already
                         waiting for the span attached (logs.py); a GenAI call from a service that sends
                         log records held for them, up to traces.logs.window
    logs   -> export_logs: a held call gets its records and is queued; else the records wait, up to the window
    expiry -> held calls are queued without records; records whose span never came are dropped, counted

Held calls and waiting records are acknowledged to their exporters, so they live in the pending store
(pending.py: committed with a durable queue) until what they became is in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson

from otel_bridge.config import Traces
from otel_bridge.decode.logs import LogRecord
from otel_bridge.errors import QueueError, QueueFullError
from otel_bridge.exporter.queue import QUEUE_FULL_RETRY_AFTER, CallQueue
from otel_bridge.mapping.lookup import as_str, find
from otel_bridge.mapping.rules import Rules
from otel_bridge.telemetry.metrics import Metrics
from otel_bridge.traces.logs import attach, joins, record_from_json, record_json
from otel_bridge.traces.memory import TraceMemory
from otel_bridge.traces.pending import CALL, LOG, Pending, PendingStore
from otel_bridge.traces.rollup import dedupe_usage, roll_up_status

__all__ = ["TraceStage", "RequestPass"]

log = logging.getLogger("otel_bridge.traces")

_RESPONSE_ID = ("gen_ai", "response", "id")
_SERVICE_NAME = ("service", "name")
_MAX_LOG_SOURCES = 10_000
Key = tuple[str, str]  # (trace id, span id), hex


class TraceStage:
    def __init__(
        self,
        config: Traces,
        *,
        rules: Rules | None = None,
        queue: CallQueue | None = None,
        pending: PendingStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Without a queue (`otel-bridge convert`) nothing is held: no log records can arrive."""
        self.config = config
        self.rules = rules
        self.queue = queue
        self.pending = pending or PendingStore()
        self.metrics = metrics or Metrics()
        self.memory = TraceMemory(idle_timeout=config.idle_timeout, max_spans=config.max_spans)
        # The mapping may run in worker threads (receivers offload CPU work); the memory is shared.
        self._lock = threading.Lock()
        self._logs: dict[Key, list[Pending]] = {}  # records waiting for their span
        self._held: dict[Key, Pending] = {}  # calls waiting for their records
        self._log_sources: dict[str, float] = {}  # service.name -> when it last sent a GenAI record
        self.pending_bytes = 0
        self._expiry: asyncio.Task | None = None
        for entry in self.pending.recover():  # acknowledged before a restart
            self._index(entry)

    # --- spans ------------------------------------------------------------------------------------------

    def begin(self) -> RequestPass:
        return RequestPass(self)

    async def settle(self, done: RequestPass, held: list[tuple[str, str, str, bytes]]) -> None:
        """After the request's other calls are in the queue: keep its held calls, forget the records its
        calls took. Raises QueueFullError when the held calls do not fit the pending bound."""
        now = time.time()
        entries = [Pending(CALL, trace_id, span_id, project, now, call) for project, trace_id, span_id, call in held]
        added = sum(e.nbytes for e in entries)
        if added and self.pending_bytes + added > self.config.logs.max_pending_bytes:
            # Not held, then: queued now without their records, rather than refused.
            await self._queue({e.project: [e.data] for e in entries}.items())
            entries = []
        taken = [entry for key in done.joined for entry in self._logs.pop(key, ())]
        await self.pending.add(entries)
        for entry in entries:
            self._index(entry)
        self._forget(taken)
        if taken:
            self.metrics.log_records.labels(outcome="joined").inc(len(taken))
        await self.pending.remove(entry.row for entry in taken)
        # Records that arrived while this request was being queued.
        await self._join_ready([(e.trace_id, e.span_id) for e in entries])

    # --- log records ------------------------------------------------------------------------------------

    async def export_logs(self, records: list[LogRecord]) -> None:
        """Join what can be joined; the others are counted. Raises QueueError when a call the records
        complete cannot be queued, or the records do not fit traces.logs.max_pending_bytes."""
        joinable: dict[Key, list[LogRecord]] = {}
        now = time.time()
        uncorrelated = 0
        for record in records:
            if not joins(record):
                self.metrics.log_records.labels(outcome="not_delivered").inc()
            elif not record.trace_id or not record.span_id:
                uncorrelated += 1
            else:
                joinable.setdefault((record.trace_id, record.span_id), []).append(record)
                if record.service:
                    self._log_sources[record.service] = now
        if uncorrelated:
            self.metrics.log_records.labels(outcome="unjoined").inc(uncorrelated)
        if len(self._log_sources) > _MAX_LOG_SOURCES:
            oldest = sorted(self._log_sources, key=self._log_sources.__getitem__)
            for service in oldest[: len(oldest) - _MAX_LOG_SOURCES]:
                del self._log_sources[service]
        waiting = [
            Pending(LOG, record.trace_id, record.span_id, "", now, record_json(record))
            for group in joinable.values()
            for record in group
        ]
        added = sum(e.nbytes for e in waiting)
        if added and self.pending_bytes + added > self.config.logs.max_pending_bytes:
            raise QueueFullError(
                f"log records waiting for their spans fill traces.logs.max_pending_bytes ({self.pending_bytes} of "
                f"{self.config.logs.max_pending_bytes} bytes): retry later",
                retry_after=QUEUE_FULL_RETRY_AFTER,
            )
        # Stored first, even those whose call is held: then a crash at any point loses nothing.
        await self.pending.add(waiting)
        for entry in waiting:
            self._index(entry)
        await self._join_ready(joinable)

    # --- expiry -----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())

    async def stop(self) -> None:
        """Queue every held call (they are safe there); waiting records stay in a durable store."""
        if self._expiry is not None:
            self._expiry.cancel()
            try:
                await self._expiry
            except asyncio.CancelledError:
                pass
            self._expiry = None
        try:
            await self._release([(entry, []) for entry in list(self._held.values())])
        except QueueError as exc:
            log.warning("%d held calls not queued at shutdown (%s)%s", len(self._held), exc,
                        ": they stay in the pending store for the next start" if self.pending.durable else "")
        self.pending.close()

    async def expire(self, now: float | None = None) -> None:
        """Queue the held calls, and drop the waiting records, older than the window."""
        horizon = (time.time() if now is None else now) - self.config.logs.window
        expired_calls = [entry for entry in self._held.values() if entry.arrived <= horizon]
        if expired_calls:
            try:
                await self._release([(entry, []) for entry in expired_calls])
            except QueueError:
                pass  # the queue is full: they wait, and are tried again on the next tick
        expired_logs = [entry for group in self._logs.values() for entry in group if entry.arrived <= horizon]
        if expired_logs:
            for entry in expired_logs:
                group = self._logs[(entry.trace_id, entry.span_id)]
                group.remove(entry)
                if not group:
                    del self._logs[(entry.trace_id, entry.span_id)]
            self._forget(expired_logs)
            self.metrics.log_records.labels(outcome="unjoined").inc(len(expired_logs))
            await self.pending.remove(entry.row for entry in expired_logs)

    async def _expire_forever(self) -> None:
        tick = min(max(self.config.logs.window / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.expire()
            except Exception:  # the loop must outlive one bad tick; the next one tries again
                log.exception("log join expiry failed")

    # --- internals --------------------------------------------------------------------------------------

    def _index(self, entry: Pending) -> None:
        key = (entry.trace_id, entry.span_id)
        if entry.kind == LOG:
            self._logs.setdefault(key, []).append(entry)
        else:
            self._held[key] = entry
        self.pending_bytes += entry.nbytes
        self.metrics.pending_bytes.set(self.pending_bytes)

    def _forget(self, entries: Iterable[Pending]) -> None:
        for entry in entries:
            self.pending_bytes -= entry.nbytes
        self.metrics.pending_bytes.set(self.pending_bytes)

    async def _queue(self, calls: Iterable[tuple[str, list[bytes]]]) -> None:
        assert self.queue is not None
        by_project: dict[str, list[bytes]] = {}
        for project, project_calls in calls:
            by_project.setdefault(project, []).extend(project_calls)
        await self.queue.put(by_project)

    async def _join_ready(self, keys: Iterable[Key]) -> None:
        """Queue the held calls among `keys` whose records are waiting, with them."""
        ready = [key for key in keys if key in self._held and key in self._logs]
        if not ready:
            return
        await self._release([(self._held[key], [record_from_json(e.data) for e in self._logs[key]]) for key in ready])
        taken = [entry for key in ready for entry in self._logs.pop(key)]
        self._forget(taken)
        self.metrics.log_records.labels(outcome="joined").inc(len(taken))
        await self.pending.remove(entry.row for entry in taken)

    async def _release(self, completed: list[tuple[Pending, list[tuple[str, int, dict[str, Any]]]]]) -> None:
        """Queue held calls with these records attached, then forget them."""
        if not completed:
            return
        calls = []
        for entry, records in completed:
            data = entry.data
            if records and self.rules is not None:
                call = orjson.loads(data)
                attach(call, records, self.rules)
                data = orjson.dumps(call)
            calls.append((entry.project, [data]))
        await self._queue(calls)
        for entry, _ in completed:
            self._held.pop((entry.trace_id, entry.span_id), None)
        self._forget(entry for entry, _ in completed)
        await self.pending.remove(entry.row for entry, _ in completed)

    def _holds(self, call: dict[str, Any], tree: dict[str, Any]) -> bool:
        """Whether to wait for the call's log records: a GenAI span from a service that sends them, or one
        without content from an instrumentation that may send its content as records (log_content_scopes)."""
        if self.queue is None or self.config.logs.window <= 0 or "gen_ai" not in tree:
            return False
        dump = call["otel_dump"]
        if self.rules is not None and not call["inputs"] and not call["output"]:
            if (dump.get("scope") or {}).get("name") in self.rules.log_content_scopes:
                return True
        if not self._log_sources:
            return False
        service = as_str(find((dump.get("resource") or {}).get("attributes") or {}, _SERVICE_NAME)) or ""
        seen = self._log_sources.get(service)
        return seen is not None and time.time() - seen < self.config.idle_timeout


class RequestPass:
    """One Export's calls through the stage: `on_call` is the mapping's CallHook; `joined` the spans whose
    waiting records were attached (forgotten by TraceStage.settle once the calls are queued)."""

    __slots__ = ("stage", "joined")

    def __init__(self, stage: TraceStage) -> None:
        self.stage = stage
        self.joined: list[Key] = []

    def on_call(self, call: dict[str, Any], tree: dict[str, Any]) -> bool:
        stage = self.stage
        response_id = as_str(find(tree, _RESPONSE_ID)) if stage.config.dedupe_usage_by_response_id else None
        with stage._lock:
            state = stage.memory.trace(call["trace_id"])
            roll_up_status(call, state, stage.memory)
            if response_id and dedupe_usage(call, response_id, state, stage.memory):
                stage.metrics.deduplicated_usage.inc()
        key = (call["trace_id"], call["id"])
        waiting = stage._logs.get(key)
        if waiting and stage.rules is not None:
            attach(call, [record_from_json(entry.data) for entry in waiting], stage.rules)
            self.joined.append(key)
            return True
        return not stage._holds(call, tree)
