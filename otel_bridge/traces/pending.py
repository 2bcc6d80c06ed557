"""Where the log join keeps what waits for its other half: log records whose span has not arrived, and
calls held for their log records. Each was acknowledged to an exporter, so with a durable queue
(exporter.queue.directory) they are committed to DIRECTORY/pending.sqlite3 before the Export is answered,
and read back on start; in memory otherwise, like the queue itself.

A row is deleted only after what it became is in the queue (the call, with the records attached), so a
crash between the two sends the call again (same id: the upstream keeps one) rather than losing anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otel_bridge.sqlite_file import FileState

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
    """In memory: what waits is held by the stage itself, so the store only numbers it.
    pending_file.py's PendingFile is the durable one."""

    path: Path | None = None
    durable = False
    state: FileState | None = None

    def __init__(self) -> None:
        self._next_row = 1

    def recover(self) -> list[Pending]:
        """What an earlier run left waiting, oldest first."""
        return []

    async def add(self, entries: list[Pending]) -> None:
        """Give each entry its row and store them all, committed before this returns; QueueError if they
        cannot be stored (a full disk): the Export is refused, to be retried."""
        for entry in entries:
            entry.row = self._next_row
            self._next_row += 1

    async def remove(self, rows: Iterable[int]) -> None:
        """Forget rows (delivered to the queue)."""

    def close(self) -> None:
        pass


def open_pending(directory: str | None) -> PendingStore:
    if not directory:
        return PendingStore()
    from otel_bridge.traces.pending_file import PendingFile  # sqlite3 only where the queue is durable

    return PendingFile(Path(directory) / "pending.sqlite3")
