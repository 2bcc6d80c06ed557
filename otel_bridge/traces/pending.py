"""Where the log join keeps what waits for its other half: log records whose span has not arrived, and
calls held for their log records. Each was acknowledged to an exporter, so with a durable queue
(exporter.queue.directory) they are committed to DIRECTORY/pending.sqlite3 before the Export is answered,
and read back on start; in memory otherwise, like the queue itself.

A row is deleted only after what it became is in the queue (the call, with the records attached), so a
crash between the two sends the call again (same id: the upstream keeps one) rather than losing anything.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from otel_bridge.private_files import make_private_dirs, open_private

__all__ = ["Pending", "PendingStore", "open_pending"]

LOG, CALL = "log", "call"


@dataclass(slots=True)
class Pending:
    kind: str  # LOG or CALL
    trace_id: str
    span_id: str
    project: str  # the call's project; "" for a log record
    arrived: float  # wall-clock seconds, so the window survives a restart
    data: bytes  # the call's JSON, or the log record's (traces/logs.py)
    row: int = 0

    @property
    def nbytes(self) -> int:
        return len(self.data)


class PendingStore:
    """In memory when `path` is None. Writes run in one thread; reads happen once, at start."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.durable = path is not None
        self._next_row = 1
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        if path is not None:
            # Created owner-only before SQLite opens it, so its -wal and -shm files get the same mode.
            make_private_dirs(path.parent)
            open_private(path).close()
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pending (row INTEGER PRIMARY KEY, kind TEXT NOT NULL, trace_id TEXT NOT NULL,"
                " span_id TEXT NOT NULL, project TEXT NOT NULL, arrived REAL NOT NULL, data BLOB NOT NULL)"
            )
            last = self._db.execute("SELECT MAX(row) FROM pending").fetchone()[0]
            self._next_row = (last or 0) + 1

    def recover(self) -> list[Pending]:
        if self._db is None:
            return []
        rows = self._db.execute("SELECT row, kind, trace_id, span_id, project, arrived, data FROM pending ORDER BY row")
        return [Pending(kind, t, s, p, a, bytes(d), row) for row, kind, t, s, p, a, d in rows]

    async def add(self, entries: list[Pending]) -> None:
        """Give each entry its row and store them all, committed before this returns."""
        for entry in entries:
            entry.row = self._next_row
            self._next_row += 1
        if self._db is not None and entries:
            await asyncio.to_thread(self._write, entries, ())

    async def remove(self, rows: Iterable[int]) -> None:
        rows = list(rows)
        if self._db is not None and rows:
            await asyncio.to_thread(self._write, (), rows)

    def _write(self, entries: Iterable[Pending], rows: Iterable[int]) -> None:
        assert self._db is not None
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.row, e.kind, e.trace_id, e.span_id, e.project, e.arrived, e.data) for e in entries],
            )
            self._db.executemany("DELETE FROM pending WHERE row = ?", [(row,) for row in rows])
            self._db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_pending(directory: str | None) -> PendingStore:
    return PendingStore(Path(directory) / "pending.sqlite3" if directory else None)
