"""The sender interface: one method. Layers (retry, ...) wrap a sender and are senders themselves."""

from __future__ import annotations

from typing import Protocol

from otel_bridge.exporter.queue import Batch

__all__ = ["Sender"]


class Sender(Protocol):
    async def send(self, batch: Batch) -> None:
        """Deliver the batch or raise RetryableError / PermanentError."""

    async def close(self) -> None: ...
