"""Queue consumers: move batches from the queue through the sender chain, then ack or nack them.

    sent or dead-lettered        -> ack (deleted from the queue)
    401/403 (ProjectBlocked)     -> nack, and the project is paused: other projects keep flowing, and
                                    the project is tried again every exporter.retry.max_interval
    shutdown (cancelled)         -> nack: it stays queued, in the file when the queue is durable
    anything unexpected          -> nack, logged, the consumer waits a moment

Also here: the drain at shutdown, and the report that is logged at intervals while delivery is degraded.
"""

from __future__ import annotations

import asyncio
import logging
import time

from otel_bridge.config import Batch as BatchConfig
from otel_bridge.notation import format_duration
from otel_bridge.errors import ProjectBlockedError, ProjectInRetry, QueueError
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.queue import CallQueue
from otel_bridge.telemetry.metrics import Metrics

__all__ = ["Dispatcher"]

log = logging.getLogger("otel_bridge.exporter")

# After an unexpected error, a consumer waits this long before taking the next batch.
_PAUSE_AFTER_ERROR = 1.0


class Dispatcher:
    def __init__(
        self,
        queue: CallQueue,
        sender: Sender,
        batch: BatchConfig,
        *,
        consumers: int,
        metrics: Metrics,
        blocked_retry_interval: float,
        report_interval: float,
    ) -> None:
        self.queue = queue
        self.sender = sender
        self.batch = batch
        self.metrics = metrics
        self.blocked_retry_interval = blocked_retry_interval
        self.report_interval = report_interval
        self._consumers = consumers
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._consume(), name=f"consumer-{i}") for i in range(self._consumers)]
        self._tasks.append(asyncio.create_task(self._report(), name="delivery-report"))

    async def _consume(self) -> None:
        while True:
            try:
                batch = await self.queue.take(
                    max_calls=self.batch.max_calls, max_bytes=self.batch.max_bytes, linger=self.batch.flush_interval
                )
            except QueueError as exc:  # the store could not be read; the calls stay queued
                log.error("%s", exc)
                await asyncio.sleep(_PAUSE_AFTER_ERROR)
                continue
            except Exception:  # a consumer that dies would stop delivery silently: log and go on
                log.exception("unexpected error taking a batch from the queue")
                await asyncio.sleep(_PAUSE_AFTER_ERROR)
                continue
            try:
                await self.sender.send(batch)
            except asyncio.CancelledError:
                self.queue.nack(batch)  # interrupted, not failed: it stays queued
                raise
            except ProjectInRetry:
                self.queue.nack(batch)  # its project is held until the batch in retry is settled
            except ProjectBlockedError as exc:
                self.queue.nack(batch)
                self.queue.pause(batch.project, self.blocked_retry_interval)
                log.error(
                    "delivery to %s is stopped: %s. Its calls are kept (%d in this batch) and tried again every %s "
                    "(exporter.retry.max_interval); other projects keep flowing",
                    batch.project,
                    exc,
                    len(batch.calls),
                    format_duration(self.blocked_retry_interval),
                )
            except Exception:
                log.exception("unexpected error sending %d calls for %s; they stay queued", len(batch.calls), batch.project)
                self.queue.nack(batch)
                await asyncio.sleep(_PAUSE_AFTER_ERROR)
            else:
                self.queue.ack(batch)

    def _tally(self) -> dict[str, int]:
        t = self.metrics.tally
        return {"sent": t.sent, "retried": t.retried, "dead-lettered": t.dead_lettered, "refused": t.refused}

    async def _report(self) -> None:
        """Every report_interval while degraded, one line with what happened; one more when it recovers."""
        previous = self._tally()
        degraded = False
        while True:
            await asyncio.sleep(self.report_interval)
            current = self._tally()
            delta = {key: current[key] - previous[key] for key in current}
            previous = current
            blocked = self.queue.paused_projects()
            in_retry = self.metrics.tally.in_retry
            queue = self.queue
            held = (
                f"queue holds {queue.size_calls} calls ({queue.size_bytes / 2**20:.1f} MiB, "
                f"{100 * queue.size_bytes / queue.max_bytes:.0f}% of exporter.queue.max_bytes)"
            )
            if in_retry or blocked or delta["retried"] or delta["dead-lettered"] or delta["refused"]:
                degraded = True
                log.warning(
                    "delivery degraded: %s; %d batches waiting to retry%s; in the last %s: %d calls sent, %d retried, "
                    "%d dead-lettered, %d spans refused (queue full)",
                    held,
                    in_retry,
                    f"; blocked projects (401/403): {', '.join(blocked)}" if blocked else "",
                    format_duration(self.report_interval),
                    delta["sent"],
                    delta["retried"],
                    delta["dead-lettered"],
                    delta["refused"],
                )
            elif degraded:
                degraded = False
                log.info("delivery recovered: %s", held)

    async def drain(self, timeout: float) -> None:
        """Send what is queued without lingering, for up to `timeout` seconds, then stop the consumers.

        Batches still being sent are cancelled and stay queued: in the file when the queue is durable.
        """
        self.queue.flush()
        deadline = time.monotonic() + timeout
        while not self.queue.idle() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        left = self.queue.size_calls
        if left and self.queue.store.durable:
            log.warning(
                "%d calls (%d bytes) not delivered by shutdown; they are kept in %s and delivered after restart",
                left,
                self.queue.size_bytes,
                self.queue.store.description,
            )
        elif left:
            log.error(
                "shutdown_timeout reached with %d calls (%d bytes) undelivered, and lost; set exporter.queue.directory "
                "to keep them across restarts",
                left,
                self.queue.size_bytes,
            )
