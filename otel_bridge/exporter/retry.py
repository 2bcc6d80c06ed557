"""Retry layer: exponential backoff with jitter; the server's Retry-After wins when longer.

Only RetryableError is retried; every other error passes through at once. Shutdown cancels the task
that sleeps here, and the batch stays queued (the queue consumer nacks it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from otel_bridge.errors import ProjectInRetry, RetriesExhaustedError, RetryableError
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.queue import Batch
from otel_bridge.telemetry.metrics import Metrics

__all__ = ["RetrySender", "next_backoff", "next_wait", "MULTIPLIER", "JITTER"]

log = logging.getLogger("otel_bridge.exporter")

MULTIPLIER = 1.5
JITTER = 0.5  # each wait is uniformly within +-50% of the nominal interval


def next_backoff(attempt: int, initial: float, maximum: float, rand: Callable[[], float] = random.random) -> float:
    """The wait before retry number `attempt` (0-based): initial x 1.5^attempt, at most `maximum`, +-50%."""
    nominal = min(initial * MULTIPLIER**attempt, maximum)
    return nominal * (1 - JITTER + 2 * JITTER * rand())


def next_wait(backoff: float, retry_after: float | None) -> float:
    """The server's delay wins when it is longer than ours."""
    return backoff if retry_after is None else max(backoff, retry_after)


class RetrySender:
    def __init__(
        self,
        inner: Sender,
        *,
        initial_interval: float,
        max_interval: float,
        max_elapsed_time: float,
        metrics: Metrics,
        hold: Callable[[str], bool] = lambda project: True,
        release: Callable[[str], None] = lambda project: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.inner = inner
        self.initial_interval = initial_interval
        self.max_interval = max_interval
        self.max_elapsed_time = max_elapsed_time  # 0: forever
        self.report = metrics.exporter
        # While a batch waits to be retried, its project is held: no other consumer takes its batches, and
        # one that fails meanwhile goes back to the queue (ProjectInRetry) instead of retrying beside it.
        self._hold = hold
        self._release = release
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

    async def send(self, batch: Batch) -> None:
        deadline = self._clock() + self.max_elapsed_time if self.max_elapsed_time else None
        attempt = 0
        held = False
        try:
            while True:
                try:
                    return await self.inner.send(batch)
                except RetryableError as exc:
                    if not held:
                        if not self._hold(batch.project):
                            raise ProjectInRetry(f"{batch.project} already has a batch waiting to be retried") from None
                        held = True
                        self.report.retry_wait_started()
                    wait = self._wait_for_retry(batch, exc, attempt, deadline)
                attempt += 1
                await self._sleep(wait)
        finally:
            if held:
                self.report.retry_wait_ended()
                self._release(batch.project)

    def _wait_for_retry(self, batch: Batch, exc: RetryableError, attempt: int, deadline: float | None) -> float:
        """How long to wait before the next attempt; raises when that would pass the deadline."""
        wait = next_wait(next_backoff(attempt, self.initial_interval, self.max_interval, self._rand), exc.retry_after)
        if deadline is not None and self._clock() + wait > deadline:
            raise RetriesExhaustedError(
                f"no more retries left (exporter.retry.max_elapsed_time): {exc}", status=exc.status, answer=exc.answer
            ) from None
        # The first failure of a batch is worth a warning; the rest are summed up by the
        # degraded-delivery report (telemetry.degraded_log_interval).
        level = logging.WARNING if attempt == 0 else logging.DEBUG
        log.log(level, "sending %d calls to %s failed, retrying in %.1fs: %s", len(batch.calls), batch.project, wait, exc)
        self.report.retrying(len(batch.calls))
        return wait

    async def close(self) -> None:
        await self.inner.close()
