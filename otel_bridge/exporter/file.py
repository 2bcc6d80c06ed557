"""Write each request body as one JSON line: the sink when no API key is configured."""

from __future__ import annotations

import asyncio
from pathlib import Path

from otel_bridge.exporter.envelope import body
from otel_bridge.exporter.queue import Batch
from otel_bridge.private_files import make_private_dirs, open_private

__all__ = ["FileSender"]


class FileSender:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        make_private_dirs(self.path.parent)
        self._file = open_private(self.path)
        self._lock = asyncio.Lock()

    async def send(self, batch: Batch) -> None:
        async with self._lock:  # one writer at a time keeps every line whole
            self._file.write(body(batch.calls) + b"\n")
            self._file.flush()

    async def close(self) -> None:
        self._file.close()
