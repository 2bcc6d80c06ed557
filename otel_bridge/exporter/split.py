"""Split and dead-letter layer: every request body fits the limit, and a refused call sinks only itself.

The queue makes batches of at most exporter.batch.max_bytes, but a lone call may be larger; the limit
here is the upstream's (31 MiB).

    body over the limit     -> halves; a lone call is trimmed (largest values cut, marked)
    413 from the upstream   -> halves; a lone call is trimmed to half its size, again, until it passes
    422 from the upstream   -> bisect down to the refused call(s); the rest is delivered
    other refusals          -> (4xx, retries exhausted, retry disabled) the batch is dead-lettered
    401/403                 -> passed on: the queue consumer stops the project and keeps its calls

When this layer returns, every call of the batch was accepted upstream or written to the dead-letter
file, so the queue may delete the batch. If the dead-letter file cannot be written, the error goes up
and the batch stays queued.
"""

from __future__ import annotations

import logging

from otel_bridge.errors import (
    ExportError,
    InvalidCallsError,
    ProjectBlockedError,
    RequestTooLargeError,
    RetriesExhaustedError,
    RetryableError,
)
from otel_bridge.exporter.dead_letter import DeadLetterFile
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.envelope import body_size
from otel_bridge.exporter.queue import Batch
from otel_bridge.exporter.trim import trim_call
from otel_bridge.telemetry.metrics import Metrics

__all__ = ["SplitSender"]

log = logging.getLogger("otel_bridge.exporter")


def _halves(batch: Batch) -> tuple[Batch, Batch]:
    middle = len(batch.calls) // 2
    return Batch(batch.project, batch.calls[:middle]), Batch(batch.project, batch.calls[middle:])


def _reason(error: ExportError) -> str:
    """The send_failed_calls label of a final refusal (part of the metrics contract)."""
    if isinstance(error, RequestTooLargeError):
        return "too_large"
    if isinstance(error, InvalidCallsError):
        return "invalid"
    if isinstance(error, RetriesExhaustedError):
        return "retries_exhausted"
    if isinstance(error, RetryableError):
        return "not_retried"  # exporter.retry.enabled is false
    return "refused"


class SplitSender:
    def __init__(self, inner: Sender, *, max_body_bytes: int, dead_letter: DeadLetterFile, metrics: Metrics) -> None:
        self.inner = inner
        self.max_body_bytes = max_body_bytes
        self.dead_letter = dead_letter
        self.report = metrics.exporter

    async def send(self, batch: Batch) -> None:
        await self._deliver(batch, self.max_body_bytes)

    async def _deliver(self, batch: Batch, limit: int, cause: RequestTooLargeError | None = None) -> None:
        """Deliver or dead-letter every call; `cause` is the 413 that lowered `limit` below ours."""
        size = body_size(batch.nbytes, len(batch.calls))
        if size > limit and len(batch.calls) > 1:
            for half in _halves(batch):
                await self._deliver(half, limit)
            return
        sent = batch
        if size > limit:
            trimmed = trim_call(batch.calls[0], limit - body_size(0, 1))
            if trimmed is None:
                error = cause or RequestTooLargeError(
                    f"a call of {size} bytes does not fit a request of {limit} bytes, "
                    "even with its inputs, output and otel_dump values truncated"
                )
                await self._dead_letter(batch, error)
                return
            log.warning(
                "a call for %s is %d bytes; truncated its largest values to fit a request of %d bytes",
                batch.project,
                size,
                limit,
            )
            self.report.trimmed()
            sent = Batch(batch.project, [trimmed])
        try:
            await self.inner.send(sent)
        except ProjectBlockedError:
            raise
        except RequestTooLargeError as exc:
            if len(batch.calls) > 1:
                for half in _halves(batch):
                    await self._deliver(half, limit)
            else:
                # The upstream's limit is below ours: try half the size, until the call fits or cannot shrink.
                await self._deliver(batch, body_size(sent.nbytes, 1) // 2, cause=exc)
        except InvalidCallsError as exc:
            if len(batch.calls) > 1:
                for half in _halves(batch):
                    await self._deliver(half, limit)
            else:
                await self._dead_letter(batch, exc)
        except ExportError as exc:
            await self._dead_letter(batch, exc)
        else:
            self.report.sent(len(batch.calls))

    async def _dead_letter(self, batch: Batch, error: ExportError) -> None:
        reason = _reason(error)
        try:
            await self.dead_letter.write(batch, error, reason)
        except OSError as exc:
            log.error(
                "cannot write %d refused calls to the dead-letter file %s (exporter.dead_letter.path): %s; "
                "they stay queued",
                len(batch.calls),
                self.dead_letter.path,
                exc,
            )
            raise
        log.error(
            "dead-lettered %d calls for %s to %s (%s): %s",
            len(batch.calls),
            batch.project,
            self.dead_letter.path,
            reason,
            error,
        )
        self.report.dead_lettered(reason, len(batch.calls))

    async def close(self) -> None:
        await self.inner.close()
