"""The durable store of the queue (exporter.queue.directory): calls in DIRECTORY/queue.sqlite3.

Imported only when the queue is durable, so a bridge that queues in memory never loads sqlite3.
exporter/queue.py has the queue itself and what a store must do (`Store`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import sys
from array import array
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path
from typing import Any

from otel_bridge.errors import ConfigError, QueueError
from otel_bridge.exporter.queue import QUEUE_FULL_RETRY_AFTER
from otel_bridge.private_files import make_private_dirs
from otel_bridge.sqlite_file import FileState, SqliteFile, describe_error, is_disk_full

__all__ = ["SqliteStore"]

log = logging.getLogger("otel_bridge.exporter.queue")

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
