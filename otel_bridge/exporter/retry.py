"""Retry layer: exponential backoff with jitter; the server's Retry-After wins when longer."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from otel_bridge.config import Retry
from otel_bridge.errors import RetryableError
from otel_bridge.exporter.sender import Sender
from otel_bridge.queue import Batch

__all__ = ["RetrySender", "next_backoff"]

log = logging.getLogger("otel_bridge.exporter")

MULTIPLIER = 1.5
JITTER = 0.5  # each wait is uniformly within +-50% of the nominal interval


def next_backoff(attempt: int, config: Retry, rand: Callable[[], float] = random.random) -> float:
    """The wait before retry number `attempt` (0-based)."""
    nominal = min(config.initial_interval * MULTIPLIER**attempt, config.max_interval)
    return nominal * (1 - JITTER + 2 * JITTER * rand())


class RetrySender:
    def __init__(self, inner: Sender, config: Retry, *, on_retry: Callable[[], None] = lambda: None) -> None:
        self.inner = inner
        self.config = config
        self._on_retry = on_retry

    async def send(self, batch: Batch) -> None:
        deadline = time.monotonic() + self.config.max_elapsed_time if self.config.max_elapsed_time else None
        attempt = 0
        while True:
            try:
                return await self.inner.send(batch)
            except RetryableError as exc:
                wait = next_backoff(attempt, self.config)
                if exc.retry_after is not None:
                    wait = max(wait, exc.retry_after)
                if deadline is not None and time.monotonic() + wait > deadline:
                    raise RetryableError(
                        f"no more retries left (exporter.retry.max_elapsed_time): {exc}", status=exc.status
                    ) from None
                log.warning("sending %d calls to %s failed, retrying in %.1fs: %s", len(batch.calls), batch.project, wait, exc)
                self._on_retry()
                attempt += 1
                await asyncio.sleep(wait)  # shutdown cancels the task, and the batch stays queued

    async def close(self) -> None:
        await self.inner.close()
