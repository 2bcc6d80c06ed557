"""The dead-letter file: calls the upstream refused for good, one JSON line each, with its answer.

    {"dead_lettered_at": "...Z", "project_id": "entity/project", "status": 422, "reason": "invalid",
     "error": "POST ... answered 422: ...", "answer": {...the upstream's body...}, "call": {...}}

`call` is the request's call as it was sent, so a fixed call can be replayed to calls/complete. A Kafka
message no call can be made of (receiver/kafka.py) gets one line of its own, with where it was read and
its bytes in base64, so it can be produced again once fixed:

    {"dead_lettered_at": "...Z", "reason": "undecodable", "error": "...",
     "kafka": {"topic": "otlp_spans", "partition": 3, "offset": 1041, "key": "..."}, "message": "<base64>"}

The file is opened on the first write: a bridge that never dead-letters never creates it.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from otel_bridge.errors import ExportError
from otel_bridge.exporter.queue import Batch
from otel_bridge.private_files import make_private_dirs, open_private

__all__ = ["DeadLetterFile"]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
                "dead_lettered_at": _now(),
                "project_id": batch.project,
                "status": error.status,
                "reason": reason,
                "error": str(error),
                "answer": _answer(error.answer),
            }
        )
        prefix = head[:-1] + b',"call":'
        lines = b"".join(prefix + call + b"}\n" for call in batch.calls)
        await self._write(lines)

    async def write_message(self, message: bytes, *, reason: str, error: str, kafka: dict[str, Any]) -> None:
        """Append one line for a Kafka message no call could be made of. Raises OSError like write()."""
        line = orjson.dumps(
            {
                "dead_lettered_at": _now(),
                "reason": reason,
                "error": error,
                "kafka": kafka,
                "message": base64.b64encode(message).decode(),
            }
        )
        await self._write(line + b"\n")

    async def _write(self, lines: bytes) -> None:
        async with self._lock:  # one writer at a time keeps every line whole
            await asyncio.to_thread(self._append, lines)

    def _append(self, lines: bytes) -> None:
        make_private_dirs(self.path.parent)
        with open_private(self.path) as file:
            file.write(lines)
