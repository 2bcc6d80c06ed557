"""The durable pending store (exporter.queue.directory): DIRECTORY/pending.sqlite3.

Imported only when the queue is durable, so a bridge that queues in memory never loads sqlite3.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from otel_bridge.errors import ConfigError, QueueError
from otel_bridge.private_files import make_private_dirs
from otel_bridge.sqlite_file import FileState, SqliteFile, describe_error, is_disk_full
from otel_bridge.traces.pending import CALL, LOG, Pending, PendingStore

__all__ = ["PendingFile"]

log = logging.getLogger("otel_bridge.traces.pending")

_TABLE = (
    "CREATE TABLE pending (row INTEGER PRIMARY KEY, kind TEXT NOT NULL, trace_id TEXT NOT NULL,"
    " span_id TEXT NOT NULL, project TEXT NOT NULL, arrived REAL NOT NULL, data BLOB NOT NULL)"
)


def _whole_row(row: tuple[Any, ...]) -> bool:
    """Whether a row read back from a damaged file is whole."""
    return (
        len(row) == 7
        and isinstance(row[0], int)
        and row[1] in (LOG, CALL)
        and all(isinstance(value, str) for value in row[2:5])
        and isinstance(row[5], float)
        and isinstance(row[6], bytes)
    )


class PendingFile(PendingStore):
    """Committed to `path` before add() returns. Writes run in one thread; reads happen once, at start."""

    durable = True
    path: Path
    state: FileState

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._lock = threading.Lock()
        self._deletes: list[int] = []  # rows whose delete could not be committed yet
        make_private_dirs(path.parent)
        self._file = SqliteFile(
            path,
            name="pending",
            config_key="exporter.queue.directory",
            schema=lambda db: db.execute(_TABLE),
            tables={"pending": _whole_row},
            synchronous="FULL",
        )
        self.state = self._file.state
        try:
            self._next_row += self._file.use(lambda db: db.execute("SELECT MAX(row) FROM pending").fetchone()[0]) or 0
        except (sqlite3.Error, OSError) as exc:
            if not is_disk_full(exc):
                raise ConfigError(f"cannot open {path} (exporter.queue.directory): {exc}") from None
            # No file yet and no room for one: adds are refused until there is (use() tries again).
            self.state.write_error = describe_error(exc, path.parent)

    def recover(self) -> list[Pending]:
        if not self._file.opened:
            return []
        query = "SELECT row, kind, trace_id, span_id, project, arrived, data FROM pending ORDER BY row"
        rows = self._file.use(lambda db: db.execute(query).fetchall())
        return [Pending(kind, t, s, p, a, bytes(d), row) for row, kind, t, s, p, a, d in rows]

    async def add(self, entries: list[Pending]) -> None:
        """Give each entry its row and store them all, committed before this returns; QueueError if they
        cannot be stored (a full disk): the Export is refused, to be retried."""
        await super().add(entries)
        if entries:
            try:
                await asyncio.to_thread(self._write, entries)
            except (sqlite3.Error, OSError) as exc:
                raise QueueError(
                    f"cannot write {self.path} ({self._failed(exc)}; exporter.queue.directory): retry later",
                    retry_after=1.0,
                ) from None

    async def remove(self, rows: Iterable[int]) -> None:
        """Forget rows. A delete that cannot be committed now is kept for the next write: the row is
        read back at the next start, and its call sent again (the upstream keeps one)."""
        self._deletes.extend(rows)
        if self._deletes:
            try:
                await asyncio.to_thread(self._write, ())
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)

    def _failed(self, exc: BaseException) -> str:
        reason = describe_error(exc, self.path.parent)
        if self.state.write_error != reason:
            log.error("cannot write %s: %s", self.path, reason)
        self.state.write_error = reason
        return reason

    def _write(self, entries: Iterable[Pending]) -> None:
        with self._lock:
            deletes, self._deletes = self._deletes, []
            rows = [(e.row, e.kind, e.trace_id, e.span_id, e.project, e.arrived, e.data) for e in entries]
            try:
                self._file.transaction([
                    ("DELETE FROM pending WHERE row = ?", [(row,) for row in deletes]),
                    ("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)", rows),
                ])
            except BaseException:
                self._deletes[:0] = deletes
                raise
            if self.state.write_error is not None:
                log.warning("%s can be written again (it could not: %s)", self.path, self.state.write_error)
                self.state.write_error = None

    def close(self) -> None:
        self._file.close()


