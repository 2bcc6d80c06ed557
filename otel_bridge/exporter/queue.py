"""The queue between mapping and delivery. It is also the batch buffer: calls wait here, per project,
until a batch is full or has lingered `flush_interval`, so no call sits anywhere else.

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
is its store's business. `MemoryStore` keeps them in process memory. `SqliteStore` keeps them in SQLite
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
import fcntl
import logging
import math
import os
import sqlite3
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, Protocol

from otel_bridge.errors import ConfigError, OversizedRequestError, QueueError, QueueFullError
from otel_bridge.exporter.envelope import body_size
from otel_bridge.private_files import make_private_dirs
from otel_bridge.sqlite_file import FileState, SqliteFile, describe_error, is_disk_full

__all__ = ["Batch", "CallQueue", "MemoryStore", "SqliteStore", "open_queue", "QUEUE_FULL_RETRY_AFTER"]

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


_SCHEMA_VERSION = 1
# SQLite's limit on host parameters per statement is 32766; stay well below it.
_SELECT_CHUNK = 500


def _pack_sizes(calls: list[bytes]) -> bytes:
    sizes = array("I", map(len, calls))
    if sys.byteorder == "big":  # the file is little-endian wherever it was written
        sizes.byteswap()
    return sizes.tobytes()


def _unpack_sizes(packed: bytes) -> array[int]:
    sizes = array("I")
    sizes.frombytes(packed)
    if sys.byteorder == "big":
        sizes.byteswap()
    return sizes


def _spans(sizes: Iterable[int]) -> list[tuple[int, int]]:
    """(start, end) of each call in their concatenation."""
    ends = list(accumulate(sizes))
    return list(zip([0, *ends[:-1]], ends))


def _create_schema(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE call_groups (id INTEGER PRIMARY KEY, project TEXT NOT NULL, sizes BLOB NOT NULL, calls BLOB NOT NULL)"
    )
    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


def _whole_call_group(row: tuple[Any, ...]) -> bool:
    """Whether a row read back from a damaged file is whole: its sizes add up to its calls."""
    if len(row) != 4:
        return False
    _, project, sizes, calls = row
    if not isinstance(project, str) or not isinstance(sizes, bytes) or not isinstance(calls, bytes) or len(sizes) % 4:
        return False
    return sum(_unpack_sizes(sizes)) == len(calls)


class SqliteStore:
    """Calls in `<directory>/queue.sqlite3`, WAL mode, synchronous=NORMAL: a committed put survives the
    process being killed (kill -9, OOM); the last commits may be lost if the machine itself crashes.

    One row per put and project holds those calls concatenated, with their sizes: the per-call cost of
    SQLite would otherwise dominate (and each row's step hands the GIL back and forth with the event
    loop). A ref is (row id, start, end). A row is deleted once all its calls are removed, so after a
    crash the calls of a partly delivered row are sent again: at least once, as everywhere else.

    Every statement runs on one connection in one thread, so the event loop never waits on the disk.
    Puts that arrive while a commit runs are committed together in the next transaction (group
    commit), with the deletes of delivered rows.
    """

    FILE_NAME = "queue.sqlite3"
    durable = True

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.description = f"SQLite in {self.directory}"
        try:
            make_private_dirs(self.directory)
            # The lock is on the directory itself, not on a file in it: a lock file can be deleted (by hand,
            # by a cleanup job) while its bridge runs, and the next bridge would then lock a new one and share
            # the queue. The directory cannot go while the queue file is in it.
            self._lock = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ConfigError(f"exporter.queue.directory {str(directory)!r} is not usable: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise ConfigError(
                f"exporter.queue.directory {str(directory)!r} is in use by another otel-bridge process; "
                "give each bridge its own directory"
            ) from None
        self.file = SqliteFile(
            self.directory / self.FILE_NAME,
            name="queue",
            config_key="exporter.queue.directory",
            schema=_create_schema,
            tables={"call_groups": _whole_call_group},
            synchronous="NORMAL",
            prepare=self._check_and_tune,
        )
        self.state: FileState | None = self.file.state
        self._next_id = 1
        try:
            self._next_id += self.file.use(lambda db: db.execute("SELECT max(id) FROM call_groups").fetchone()[0]) or 0
        except (sqlite3.Error, OSError) as exc:
            if not is_disk_full(exc):
                os.close(self._lock)
                raise ConfigError(f"cannot open the queue {self.file.path} (exporter.queue.directory): {exc}") from None
            # No file yet and no room for one: start anyway, refusing puts until there is (use() tries again).
            self.file.state.write_error = describe_error(exc, self.directory)
            log.error("cannot create the queue: %s; Exports are refused until there is room", self.file.state.write_error)
        except BaseException:
            os.close(self._lock)
            raise
        self._remaining: dict[int, int] = {}  # row id -> its calls not yet removed
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-sqlite")
        self._inserts: list[tuple[list[tuple[int, str, bytes, bytes]], asyncio.Future[None]]] = []
        self._deletes: list[int] = []
        self._writer: asyncio.Task[None] | None = None

    def _check_and_tune(self, db: sqlite3.Connection) -> None:
        if not db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'call_groups'").fetchone()[0]:
            raise ConfigError(f"{self.file.path} is an SQLite file but not a queue: move it out of exporter.queue.directory")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != _SCHEMA_VERSION:
            raise ConfigError(
                f"{self.file.path} holds a queue of format {version}, this otel-bridge reads format "
                f"{_SCHEMA_VERSION}: deliver it with the version that wrote it, or point exporter.queue.directory elsewhere"
            )
        # Deleted calls need not be overwritten with zeros (some builds default to it): it doubles the
        # cost of every delete, and the file holds the same calls until they are delivered anyway.
        db.execute("PRAGMA secure_delete=OFF")
        # Checkpoint (and fsync) every 64 MiB of WAL rather than 4 MiB; the WAL shrinks back after.
        db.execute("PRAGMA wal_autocheckpoint=16384")
        db.execute("PRAGMA journal_size_limit=67108864")

    def recover(self) -> list[tuple[str, int, Any]]:
        if not self.file.opened:
            return []
        rows = self.file.use(lambda db: db.execute("SELECT id, project, sizes FROM call_groups ORDER BY id").fetchall())
        recovered: list[tuple[str, int, Any]] = []
        for row_id, project, packed in rows:
            sizes = _unpack_sizes(packed)
            self._remaining[row_id] = len(sizes)
            recovered.extend((project, size, (row_id, start, end)) for size, (start, end) in zip(sizes, _spans(sizes)))
        return recovered

    async def append(self, calls: dict[str, list[bytes]]) -> dict[str, list[Any]]:
        rows: list[tuple[int, str, bytes, bytes]] = []
        refs: dict[str, list[Any]] = {}
        for project, project_calls in calls.items():
            row_id = self._next_id
            self._next_id += 1
            rows.append((row_id, project, _pack_sizes(project_calls), b"".join(project_calls)))
            refs[project] = [(row_id, start, end) for start, end in _spans(map(len, project_calls))]
            self._remaining[row_id] = len(project_calls)
        committed = asyncio.get_running_loop().create_future()
        self._inserts.append((rows, committed))
        self._start_writer()
        try:
            await committed
        except BaseException:
            for row in rows:
                self._remaining.pop(row[0], None)
            raise
        return refs

    def remove(self, refs: Sequence[Any]) -> None:
        for row_id, _, _ in refs:
            left = self._remaining[row_id] - 1
            if left:
                self._remaining[row_id] = left
            else:
                del self._remaining[row_id]
                self._deletes.append(row_id)
        if self._deletes:
            self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(), name="queue-sqlite-writer")

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        state = self.file.state
        while self._inserts or self._deletes:
            inserts, self._inserts = self._inserts, []
            deletes, self._deletes = self._deletes, []
            rows = [row for batch, _ in inserts for row in batch]
            try:
                await loop.run_in_executor(self._thread, self._commit, rows, deletes)
            except (sqlite3.Error, OSError) as exc:
                reason = describe_error(exc, self.directory)
                error = QueueError(
                    f"cannot write the queue ({reason}; exporter.queue.directory): retry later",
                    retry_after=QUEUE_FULL_RETRY_AFTER,
                )
                if state.write_error != reason:
                    log.error("cannot write the queue: %s; Exports are refused until it can be written", reason)
                state.write_error = reason
                for _, committed in inserts:
                    if not committed.done():
                        committed.set_exception(error)
                # Rows not in the file: those that just failed, and those of puts waiting for the next commit.
                absent = {row[0] for row in rows} | {row[0] for batch, _ in self._inserts for row in batch}
                if is_disk_full(exc) and all(row_id in absent for row_id in self._remaining):
                    # Everything in the file is delivered, but the disk is too full even to delete it (SQLite
                    # appends every change to its WAL first): a new, empty file takes its place.
                    await loop.run_in_executor(self._thread, self._start_over)
                    continue
                # Deletes not committed are kept for the next commit: on a full disk, the space they free is
                # what lets puts in again. Alone, they are retried after a pause rather than in a loop.
                self._deletes[:0] = deletes
                if not self._inserts:
                    await asyncio.sleep(QUEUE_FULL_RETRY_AFTER)
            else:
                if state.write_error is not None:
                    log.warning("the queue can be written again (it could not: %s)", state.write_error)
                    state.write_error = None
                for _, committed in inserts:
                    if not committed.done():
                        committed.set_result(None)

    def _start_over(self) -> None:
        """Remove the file, whose every row is delivered; the next write creates a new one."""
        self.file.remove()
        log.warning("the queue file held only delivered calls and the disk was full: removed it, a new one is started")

    def _commit(self, rows: list[tuple[int, str, bytes, bytes]], deletes: list[int]) -> None:
        """Deletes first, in their own transaction: on a full disk their space is what lets the inserts in.
        `deletes` is emptied once they are committed, so the caller keeps only those that were not."""
        if deletes:
            self.file.transaction([("DELETE FROM call_groups WHERE id = ?", [(row_id,) for row_id in deletes])])
            deletes.clear()
        if rows:
            self.file.transaction([("INSERT INTO call_groups (id, project, sizes, calls) VALUES (?, ?, ?, ?)", rows)])

    async def load(self, refs: list[Any]) -> list[bytes | None]:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._select, refs)
        except (sqlite3.Error, OSError) as exc:
            raise QueueError(
                f"cannot read the queue ({describe_error(exc, self.directory)})", retry_after=QUEUE_FULL_RETRY_AFTER
            ) from None

    def _select(self, refs: list[Any]) -> list[bytes | None]:
        """The calls; None for those whose row is gone with a damaged file."""
        row_ids = list(dict.fromkeys(row_id for row_id, _, _ in refs))
        rows = self.file.use(lambda db: self._rows(db, row_ids))
        return [rows[row_id][start:end] if row_id in rows else None for row_id, start, end in refs]

    @staticmethod
    def _rows(db: sqlite3.Connection, row_ids: list[int]) -> dict[int, bytes]:
        rows: dict[int, bytes] = {}
        for first in range(0, len(row_ids), _SELECT_CHUNK):
            chunk = row_ids[first : first + _SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows.update(db.execute(f"SELECT id, calls FROM call_groups WHERE id IN ({marks})", chunk).fetchall())
        return rows

    async def close(self) -> None:
        """Commit what is pending (deletes of delivered calls), then close the file and release the directory."""
        while self._writer is not None and not self._writer.done():
            await self._writer
        await asyncio.get_running_loop().run_in_executor(self._thread, self.file.close)
        self._thread.shutdown()
        os.close(self._lock)


class _Project:
    """One project's queued calls: (enqueued at, size, ref), oldest first."""

    __slots__ = ("entries", "nbytes", "paused_until", "paused_for")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int, Any]] = deque()
        self.nbytes = 0
        self.paused_until = 0.0
        self.paused_for = ""


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
        self._reserved_bytes = 0  # puts being committed
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

    def _check_project_share(self, added: dict[str, int]) -> None:
        for project, nbytes in added.items():
            held = self._project_bytes.get(project, 0)
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

    async def put(self, calls: dict[str, list[bytes]]) -> None:
        """Store all the calls or none; returns once they are stored (committed, for a durable store)."""
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
    store: Store = SqliteStore(directory) if directory else MemoryStore()
    queue = CallQueue(store, max_bytes=max_bytes, max_project_share=max_project_share)
    if queue.size_calls:
        log.info(
            "resuming delivery of %d calls (%d bytes) kept in %s", queue.size_calls, queue.size_bytes, store.description
        )
    return queue
