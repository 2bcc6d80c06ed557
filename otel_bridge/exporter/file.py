"""Write each request body as one JSON line: the sink when no API key is configured."""

from __future__ import annotations

import asyncio
from pathlib import Path

from otel_bridge.exporter.envelope import body
from otel_bridge.exporter.queue import Batch

__all__ = ["FileSender"]


class FileSender:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")
        self._lock = asyncio.Lock()

    async def send(self, batch: Batch) -> None:
        async with self._lock:  # one writer at a time keeps every line whole
            self._file.write(body(batch.calls) + b"\n")
            self._file.flush()

    async def close(self) -> None:
        self._file.close()
