"""The dead-letter file: calls the upstream refused for good, one JSON line each, with its answer.

    {"dead_lettered_at": "...Z", "project_id": "entity/project", "status": 422, "reason": "invalid",
     "error": "POST ... answered 422: ...", "answer": {...the upstream's body...}, "call": {...}}

`call` is the request's call as it was sent, so a fixed call can be replayed to calls/complete. The
file is opened on the first write: a bridge that never dead-letters never creates it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from otel_bridge.errors import ExportError
from otel_bridge.exporter.queue import Batch
from otel_bridge.private_files import make_private_dirs, open_private

__all__ = ["DeadLetterFile"]


def _answer(text: str) -> Any:
    """The upstream's answer as JSON when it is JSON, else as text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


class DeadLetterFile:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()

    async def write(self, batch: Batch, error: ExportError, reason: str) -> None:
        """Append one line per call. Raises OSError when the file cannot be written: the caller keeps the calls."""
        head = orjson.dumps(
            {
                "dead_lettered_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "project_id": batch.project,
                "status": error.status,
                "reason": reason,
                "error": str(error),
                "answer": _answer(error.answer),
            }
        )
        prefix = head[:-1] + b',"call":'
        lines = b"".join(prefix + call + b"}\n" for call in batch.calls)
        async with self._lock:  # one writer at a time keeps every line whole
            await asyncio.to_thread(self._append, lines)

    def _append(self, lines: bytes) -> None:
        make_private_dirs(self.path.parent)
        with open_private(self.path) as file:
            file.write(lines)
