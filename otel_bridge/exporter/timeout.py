"""Timeout layer: bounds one attempt as a whole (connect, send, wait, read).

Per attempt, inside the retry layer, so each retry gets the full time again; a batch's total time is
the retry layer's business (exporter.retry.max_elapsed_time). A timed-out attempt is retryable: the
upstream may have accepted it anyway, and a resent call is deduplicated by its id and started_at.
"""

from __future__ import annotations

import asyncio

from otel_bridge.notation import format_duration
from otel_bridge.errors import RetryableError
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.queue import Batch

__all__ = ["TimeoutSender"]


class TimeoutSender:
    def __init__(self, inner: Sender, timeout: float) -> None:
        self.inner = inner
        self.timeout = timeout

    async def send(self, batch: Batch) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.inner.send(batch)
        except TimeoutError:
            raise RetryableError(
                f"sending {len(batch.calls)} calls to {batch.project} timed out after "
                f"{format_duration(self.timeout)} (exporter.weave.timeout)"
            ) from None

    async def close(self) -> None:
        await self.inner.close()
