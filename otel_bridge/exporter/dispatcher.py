"""Consumers that move batches from the queue to the sender, and the drain at shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

from otel_bridge.config import Batch as BatchConfig
from otel_bridge.errors import ExportError, PermanentError
from otel_bridge.exporter.sender import Sender
from otel_bridge.queue import MemoryQueue
from otel_bridge.telemetry import Metrics

__all__ = ["Dispatcher"]

log = logging.getLogger("otel_bridge.exporter")


class Dispatcher:
    def __init__(self, queue: MemoryQueue, sender: Sender, batch: BatchConfig, *, consumers: int, metrics: Metrics) -> None:
        self.queue = queue
        self.sender = sender
        self.batch = batch
        self.metrics = metrics
        self._consumers = consumers
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._consume(), name=f"consumer-{i}") for i in range(self._consumers)]

    async def _consume(self) -> None:
        while True:
            batch = await self.queue.take(
                max_calls=self.batch.max_calls, max_bytes=self.batch.max_bytes, linger=self.batch.flush_interval
            )
            try:
                await self.sender.send(batch)
            except asyncio.CancelledError:
                self.queue.nack(batch)  # interrupted, not failed: it stays queued
                raise
            except PermanentError as exc:
                log.error("upstream refused %d calls for %s, dropping them: %s", len(batch.calls), batch.project, exc)
                self.metrics.send_failed_calls.labels(reason="refused").inc(len(batch.calls))
                self.queue.ack(batch)
            except ExportError as exc:
                log.error("giving up on %d calls for %s: %s", len(batch.calls), batch.project, exc)
                self.metrics.send_failed_calls.labels(reason="retries_exhausted").inc(len(batch.calls))
                self.queue.ack(batch)
            except Exception:
                log.exception("unexpected error sending %d calls for %s; they stay queued", len(batch.calls), batch.project)
                self.queue.nack(batch)
                await asyncio.sleep(1.0)
            else:
                self.metrics.sent_calls.inc(len(batch.calls))
                self.queue.ack(batch)
            finally:
                self.metrics.queue_size_bytes.set(self.queue.size_bytes)

    async def drain(self, timeout: float) -> None:
        """Send what is queued without lingering, for up to `timeout` seconds, then stop the consumers."""
        self.queue.flush()
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self.queue.empty():
            log.error(
                "shutdown_timeout reached with %d calls (%d bytes) undelivered; set exporter.queue.directory to keep "
                "them across restarts",
                self.queue.size_calls,
                self.queue.size_bytes,
            )
