"""The queue between mapping and delivery. It is also the batch buffer: calls wait here, per project,
until a batch is full or has lingered `flush_interval`, so no call sits anywhere else.

    reserve(nbytes, projects) -> room held for a request's calls while it is mapped, in the queue and in
                              each project's share; QueueFullError when there is none, so a request the
                              queue cannot take is refused before the work
    put(calls by project)  -> all or nothing, stored before it returns; QueueFullError past max_bytes, or
                              past a project's share of it (max_project_share)
    take(...)              -> a Batch of one project's oldest calls, held "in flight"
    ack(batch)             -> delivered or dead-lettered: delete it from the store
    nack(batch)            -> not delivered: back to the front of its project, for a later take
    pause(project, s, why) -> take() skips the project for s seconds: its API key is refused ("blocked"),
                              or the upstream asked it to wait ("throttled", Retry-After)
    settled_before(t)      -> every call put by time.monotonic() t is acked: what a Kafka consumer with
                              the queue in memory waits for before it commits (receiver/kafka.py)

One `CallQueue` keeps the order, the sizes and the batching in memory; where the calls themselves live
is its store's business. `MemoryStore` keeps them in process memory. `SqliteStore` (queue_file.py) keeps them in SQLite
(WAL mode) in `exporter.queue.directory` and holds only (size, where in the file) per call in memory:

    put ──> commit (one transaction for every put waiting, in the store's thread) ──> index ──> Export OK
    take ─> pop from index ─> read calls ─> send ──┬─ ack:  rows deleted (with the next commit)
                                                   └─ nack: back in the index; rows untouched
    start: every row still in the file is a call acknowledged to an exporter and not yet delivered

A crash anywhere leaves each call either in the file (sent again after restart, with the same id and
started_at, so the upstream deduplicates) or accepted upstream: at least once, never lost.

When the disk or the file fails: a write that cannot be committed refuses its puts (QueueError, "disk
full at ..." when it is) and keeps its deletes for the next commit; a damaged file is set aside and
replaced by its readable rows (sqlite_file.py), and take() counts the calls whose rows are gone as lost
(`lost_calls`) instead of waiting for them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from otel_bridge.errors import OversizedRequestError, QueueFullError
from otel_bridge.exporter.envelope import body_size

if TYPE_CHECKING:
    from otel_bridge.sqlite_file import FileState

__all__ = ["Batch", "CallQueue", "MemoryStore", "Store", "open_queue", "QUEUE_FULL_RETRY_AFTER"]

log = logging.getLogger("otel_bridge.exporter.queue")

# The delay a refused exporter is told to wait (gRPC RetryInfo, HTTP Retry-After): the queue frees space
# as fast as the upstream accepts calls, and exporters have their own deadline (10s in the OTel SDKs).
QUEUE_FULL_RETRY_AFTER = 1.0


@dataclass(slots=True)
class Batch:
    project: str
    calls: list[bytes]
    refs: Sequence[Any] = field(default=())  # the store's handles on the calls; empty for batches made by splitting

    @property
    def nbytes(self) -> int:
        """The calls' own bytes, not the body's."""
        return sum(map(len, self.calls))


class Store(Protocol):
    """Where the calls live. A ref is the store's handle on one call."""

    description: str
    durable: bool  # calls survive the process
    state: FileState | None  # the file's health, where there is a file

    def recover(self) -> list[tuple[str, int, Any]]:
        """(project, size, ref) of every call kept from an earlier run, oldest first."""

    async def append(self, calls: dict[str, list[bytes]]) -> dict[str, list[Any]]:
        """Store the calls (durably, where the store is durable) and return their refs."""

    async def load(self, refs: list[Any]) -> list[bytes | None]:
        """The calls; None for a call that was lost with a damaged file."""

    def remove(self, refs: Sequence[Any]) -> None:
        """Forget delivered calls. May complete after returning: a crash before then means a resend."""

    async def close(self) -> None: ...


class MemoryStore:
    """Calls in process memory: the ref is the call itself. Lost when the process ends."""

    description = "memory"
    durable = False
    state: FileState | None = None

    def recover(self) -> list[tuple[str, int, Any]]:
        return []

    async def append(self, calls: dict[str, list[bytes]]) -> dict[str, list[Any]]:
        return calls  # the calls are their own refs

    async def load(self, refs: list[Any]) -> list[bytes | None]:
        return refs

    def remove(self, refs: Sequence[Any]) -> None:
        pass

    async def close(self) -> None:
        pass


class _Project:
    """One project's queued calls: (enqueued at, size, ref), oldest first."""

    __slots__ = ("entries", "nbytes", "paused_until", "paused_for")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int, Any]] = deque()
        self.nbytes = 0
        self.paused_until = 0.0
        self.paused_for = ""


class Reservation:
    """Room in a CallQueue held for one request's calls (CallQueue.reserve); released once."""

    __slots__ = ("_queue", "nbytes", "_projects")

    def __init__(self, queue: CallQueue, nbytes: int, projects: tuple[str, ...]) -> None:
        self._queue = queue
        self.nbytes = nbytes
        self._projects = projects

    def release(self) -> None:
        if not self.nbytes:
            return
        queue = self._queue
        queue._reserved_bytes -= self.nbytes
        for project in self._projects:
            left = queue._reserved_project_bytes[project] - self.nbytes
            if left:
                queue._reserved_project_bytes[project] = left
            else:
                del queue._reserved_project_bytes[project]
        self.nbytes = 0


class CallQueue:
    """Calls per project in arrival order, bounded by the bytes they hold (queued and in flight)."""

    def __init__(self, store: Store, *, max_bytes: int, max_project_share: float = 1.0) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_project_share = max_project_share
        self.max_project_bytes = int(max_bytes * max_project_share)
        # Bytes each project holds (queued, in flight, being committed): one project whose calls cannot be
        # delivered fills its share, never the whole queue.
        self._project_bytes: dict[str, int] = {}
        # Dicts keep insertion order: the first project is the one whose turn it is (see _pop).
        self._projects: dict[str, _Project] = {}
        self._queued_bytes = 0
        self._queued_calls = 0
        self._in_flight_bytes = 0
        self._in_flight_calls = 0
        self._reserved_bytes = 0  # requests being mapped (reserve) and puts being committed
        self._reserved_project_bytes: dict[str, int] = {}  # of requests being mapped, per project
        self._held: set[str] = set()  # projects with a batch waiting to be retried
        self._in_flight_since: dict[int, float] = {}  # id(batch) -> when its oldest call was put
        self._changed = asyncio.Event()
        self._flushing = False
        self.lost_calls = 0  # calls lost with a damaged durable file
        # Calls kept from an earlier run are due at once: they have waited long enough.
        for project, nbytes, ref in store.recover():
            self._append(project, -math.inf, nbytes, ref)
            self._project_bytes[project] = self._project_bytes.get(project, 0) + nbytes

    @property
    def size_bytes(self) -> int:
        return self._queued_bytes + self._in_flight_bytes

    @property
    def size_calls(self) -> int:
        return self._queued_calls + self._in_flight_calls

    def check_room(self, nbytes: int) -> None:
        """Raise QueueFullError unless `nbytes` more would fit; OversizedRequestError if they never can."""
        if nbytes > self.max_bytes:
            raise OversizedRequestError(
                f"the request needs {nbytes} bytes of queue, more than all of it (exporter.queue.max_bytes "
                f"= {self.max_bytes}): send smaller requests (the exporter's batch size) or raise the bound"
            )
        if self.size_bytes + self._reserved_bytes + nbytes > self.max_bytes:
            raise QueueFullError(
                f"queue is full ({self.size_bytes} of {self.max_bytes} bytes, exporter.queue.max_bytes): "
                "the upstream is slower than the traffic or unreachable; retry later",
                retry_after=QUEUE_FULL_RETRY_AFTER,
            )

    def reserve(self, nbytes: int, projects: Sequence[str] = ()) -> Reservation:
        """Hold `nbytes` of room for calls still to come, in the queue and in the share of each of
        `projects` (put's errors when there is none); put() or release() gives it back."""
        self.check_room(nbytes)
        self._check_project_share(dict.fromkeys(projects, nbytes))
        self._reserved_bytes += nbytes
        if nbytes:
            for project in projects:
                self._reserved_project_bytes[project] = self._reserved_project_bytes.get(project, 0) + nbytes
        return Reservation(self, nbytes, tuple(projects))

    def _check_project_share(self, added: dict[str, int]) -> None:
        for project, nbytes in added.items():
            held = self._project_bytes.get(project, 0) + self._reserved_project_bytes.get(project, 0)
            if held + nbytes > self.max_project_bytes:
                raise QueueFullError(
                    f"the queue's share for project {project} is full ({held} of {self.max_project_bytes} bytes, "
                    f"exporter.queue.max_project_share = {self.max_project_share:g} of exporter.queue.max_bytes): "
                    "the upstream accepts its calls slower than they arrive, or not at all; retry later",
                    retry_after=QUEUE_FULL_RETRY_AFTER,
                )

    def _add_project_bytes(self, added: dict[str, int], sign: int) -> None:
        for project, nbytes in added.items():
            left = self._project_bytes.get(project, 0) + sign * nbytes
            if left:
                self._project_bytes[project] = left
            else:
                self._project_bytes.pop(project, None)

    async def put(self, calls: dict[str, list[bytes]], reservation: Reservation | None = None) -> None:
        """Store all the calls or none; returns once they are stored (committed, for a durable store). The
        room `reservation` held is given back first: the calls' own size is what counts."""
        if reservation is not None:
            reservation.release()
        by_project = {project: sum(map(len, project_calls)) for project, project_calls in calls.items()}
        added = sum(by_project.values())
        self.check_room(added)
        self._check_project_share(by_project)
        self._reserved_bytes += added
        self._add_project_bytes(by_project, +1)
        # Shielded: once the store has the calls, they must reach the index even if the caller is
        # cancelled (an exporter's deadline), or they would sit in the store unsent until a restart.
        await asyncio.shield(self._store_and_index(calls, added, by_project))

    async def _store_and_index(self, calls: dict[str, list[bytes]], added: int, by_project: dict[str, int]) -> None:
        try:
            refs = await self.store.append(calls)
        except BaseException:
            self._add_project_bytes(by_project, -1)
            raise
        finally:
            self._reserved_bytes -= added
        now = time.monotonic()
        for project, project_calls in calls.items():
            for call, ref in zip(project_calls, refs[project]):
                self._append(project, now, len(call), ref)
        self._changed.set()

    def _append(self, project: str, enqueued_at: float, nbytes: int, ref: Any) -> None:
        state = self._projects.get(project)
        if state is None:
            state = self._projects[project] = _Project()
        state.entries.append((enqueued_at, nbytes, ref))
        state.nbytes += nbytes
        self._queued_bytes += nbytes
        self._queued_calls += 1

    def flush(self) -> None:
        """From now on, take() returns what there is at once, without lingering (used when draining)."""
        self._flushing = True
        self._changed.set()

    def pause(self, project: str, seconds: float, reason: str = "blocked") -> None:
        """take() skips the project for `seconds`; its calls stay queued. `reason`: "blocked" (the upstream
        refuses its API key: the receivers refuse its spans meanwhile) or "throttled" (Retry-After)."""
        state = self._projects.get(project)
        if state is None:
            state = self._projects[project] = _Project()
        state.paused_until = time.monotonic() + seconds
        state.paused_for = reason
        self._changed.set()

    def blocked(self, project: str) -> bool:
        """Whether the upstream refused the project's API key within the last pause."""
        state = self._projects.get(project)
        return state is not None and state.paused_for == "blocked" and state.paused_until > time.monotonic()

    def hold(self, project: str) -> bool:
        """take() skips the project until release(): one of its batches waits to be retried, and more
        batches sent now would only fail too, while other projects' calls wait for a consumer. False when
        the project is already held."""
        if project in self._held:
            return False
        self._held.add(project)
        return True

    def release(self, project: str) -> None:
        self._held.discard(project)
        self._changed.set()

    def paused_projects(self, reason: str = "blocked") -> list[str]:
        now = time.monotonic()
        return [p for p, state in self._projects.items() if state.paused_until > now and state.paused_for == reason]

    def _ready(self, max_calls: int, max_bytes: int, linger: float) -> tuple[str | None, float]:
        """The project to take from now, else how long until one may be due."""
        now = time.monotonic()
        wait = math.inf
        for project, state in self._projects.items():
            if not state.entries:
                continue
            if state.paused_until > now:
                wait = min(wait, state.paused_until - now)
                continue
            if project in self._held:
                continue  # release() wakes take()
            age = now - state.entries[0][0]
            count = len(state.entries)
            if self._flushing or age >= linger or count >= max_calls or body_size(state.nbytes, count) >= max_bytes:
                return project, 0.0
            wait = min(wait, linger - age)
        return None, wait

    async def take(self, *, max_calls: int, max_bytes: int, linger: float) -> Batch:
        """Wait for a batch that is full or has waited `linger` seconds, and hold it in flight."""
        while True:
            project, wait = self._ready(max_calls, max_bytes, linger)
            if project is None:
                self._changed.clear()
                try:
                    # asyncio.timeout, not wait_for: wait_for (3.11) swallows a cancellation that arrives as the
                    # event is set, and a consumer cancelled by drain() then waits on.
                    async with asyncio.timeout(None if wait == math.inf else wait):
                        await self._changed.wait()
                except TimeoutError:
                    pass
                continue
            entries = self._pop(project, max_calls, max_bytes)
            try:
                loaded = await self.store.load([ref for _, _, ref in entries])
            except BaseException:
                self._restore(project, entries)
                raise
            kept = [(entry, call) for entry, call in zip(entries, loaded) if call is not None]
            if len(kept) < len(entries):
                self._lose(project, [entry for entry, call in zip(entries, loaded) if call is None])
            if kept:
                batch = Batch(project, [call for _, call in kept], [ref for (_, _, ref), _ in kept])
                self._in_flight_since[id(batch)] = min(enqueued_at for (enqueued_at, _, _), _ in kept)
                return batch

    def _lose(self, project: str, entries: list[tuple[float, int, Any]]) -> None:
        """Calls whose rows could not be read back from a damaged file (it is set aside, see sqlite_file)."""
        nbytes = sum(size for _, size, _ in entries)
        self._in_flight_bytes -= nbytes
        self._in_flight_calls -= len(entries)
        self._add_project_bytes({project: nbytes}, -1)
        self.store.remove([ref for _, _, ref in entries])
        self.lost_calls += len(entries)
        log.error(
            "%d calls of project %s could not be read back from the damaged queue file and are lost; "
            "the file set aside may hold more (see the error above)", len(entries), project,
        )
        self._changed.set()

    def _pop(self, project: str, max_calls: int, max_bytes: int) -> list[tuple[float, int, Any]]:
        state = self._projects[project]
        entries = state.entries
        taken: list[tuple[float, int, Any]] = []
        nbytes = 0
        while entries and len(taken) < max_calls:
            size = entries[0][1]
            # A single call larger than max_bytes still goes, alone: the exporter trims it.
            if taken and body_size(nbytes + size, len(taken) + 1) > max_bytes:
                break
            taken.append(entries.popleft())
            nbytes += size
        state.nbytes -= nbytes
        # To the end of the line (re-created there when emptied): projects take turns, so one busy
        # project cannot hold every consumer while another's calls wait.
        del self._projects[project]
        if entries:
            self._projects[project] = state
        self._queued_bytes -= nbytes
        self._queued_calls -= len(taken)
        self._in_flight_bytes += nbytes
        self._in_flight_calls += len(taken)
        return taken

    def _done(self, batch: Batch) -> None:
        self._in_flight_bytes -= batch.nbytes
        self._in_flight_calls -= len(batch.calls)
        self._in_flight_since.pop(id(batch), None)

    def ack(self, batch: Batch) -> None:
        """The batch was delivered or dead-lettered: delete it."""
        self._done(batch)
        self._add_project_bytes({batch.project: batch.nbytes}, -1)
        self.store.remove(batch.refs)
        self._changed.set()

    def nack(self, batch: Batch) -> None:
        """Return an undelivered batch to the front of its project, keeping the original order."""
        self._done(batch)
        self._restore(batch.project, [(-math.inf, len(call), ref) for call, ref in zip(batch.calls, batch.refs)])

    def _restore(self, project: str, entries: list[tuple[float, int, Any]]) -> None:
        state = self._projects.pop(project, None) or _Project()
        state.entries.extendleft(reversed(entries))
        nbytes = sum(size for _, size, _ in entries)
        state.nbytes += nbytes
        # Put the project first in line again: it holds the oldest calls.
        self._projects = {project: state, **self._projects}
        self._queued_bytes += nbytes
        self._queued_calls += len(entries)
        self._changed.set()

    def settled_before(self, moment: float) -> bool:
        """Whether every call put by `moment` (time.monotonic()) is delivered or dead-lettered. Calls put
        back (nack) or recovered count as put before any moment: they are older than anything put since."""
        oldest = min(self._in_flight_since.values(), default=math.inf)
        for state in self._projects.values():
            if state.entries:  # oldest first, put-back calls (-inf) before them
                oldest = min(oldest, state.entries[0][0])
        return oldest > moment

    def idle(self) -> bool:
        """Nothing in flight and nothing that take() could return now (paused projects wait)."""
        if self._in_flight_calls:
            return False
        now = time.monotonic()
        return not any(state.entries and state.paused_until <= now for state in self._projects.values())

    async def close(self) -> None:
        await self.store.close()


def open_queue(directory: str | None, *, max_bytes: int, max_project_share: float = 1.0) -> CallQueue:
    """The queue `exporter.queue` describes: durable in `directory`, else in memory."""
    store: Store
    if directory:
        from otel_bridge.exporter.queue_file import SqliteStore  # sqlite3 only where the queue is durable

        store = SqliteStore(directory)
    else:
        store = MemoryStore()
    queue = CallQueue(store, max_bytes=max_bytes, max_project_share=max_project_share)
    if queue.size_calls:
        log.info(
            "resuming delivery of %d calls (%d bytes) kept in %s", queue.size_calls, queue.size_bytes, store.description
        )
    return queue
