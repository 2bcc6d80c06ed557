"""The one entry point both receivers call: map a request's spans and queue the calls.

An Export is answered OK only after the queue holds its calls (committed, when the queue is durable);
spans that cannot be mapped are reported back (partial success); a full queue raises QueueFullError so
the receiver can ask the client to retry (receiver/status.py). Nothing is accepted and then dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from otel_bridge.decode import count_spans
from otel_bridge.errors import OversizedRequestError, QueueError, QueueFullError
from otel_bridge.mapping import MappedRequest, Mapper
from otel_bridge.exporter.queue import CallQueue
from otel_bridge.telemetry.metrics import Metrics

__all__ = ["Pipeline", "ExportResult"]


@dataclass(frozen=True, slots=True)
class ExportResult:
    rejected_spans: int
    error_message: str


class Pipeline:
    def __init__(
        self,
        *,
        queue: CallQueue,
        mapper: Mapper,
        default_project: str,
        metrics: Metrics,
    ) -> None:
        self.queue = queue
        self.mapper = mapper
        self.default_project = default_project
        self.metrics = metrics

    def map(self, data: bytes, header_project: str | None) -> MappedRequest:
        return self.mapper.map(data, header_project=header_project, default_project=self.default_project)

    async def export(self, data: bytes, *, header_project: str | None, transport: str) -> ExportResult:
        """Map and queue the calls of a serialized ExportTraceServiceRequest. Raises BadRequestError when
        the bytes are not one, QueueError when the queue refuses its calls."""
        spans = None
        try:
            # While the queue is full, refuse before mapping: the calls of a request are at least as large
            # as its protobuf encoding, so it could not fit, and exporters' retries then cost little CPU.
            self.queue.check_room(len(data))
            mapped = self.map(data, header_project)
            spans = mapped.spans
            self.metrics.received_spans.labels(transport=transport).inc(spans)
            if mapped.calls:
                await self.queue.put(mapped.calls)
        except QueueError as exc:  # the receiver answers with status_of(exc); nothing of the request is kept
            if spans is None:  # refused before decoding: count them, for the metrics
                spans = count_spans(data)
                self.metrics.received_spans.labels(transport=transport).inc(spans)
            reason = {QueueFullError: "queue_full", OversizedRequestError: "too_large"}.get(type(exc), "queue_error")
            self.metrics.refused_spans.labels(transport=transport, reason=reason).inc(spans)
            raise
        self.metrics.queue_size_bytes.set(self.queue.size_bytes)
        self.metrics.queue_size_calls.set(self.queue.size_calls)
        self._count_cuts(mapped)
        self.metrics.accepted_spans.labels(transport=transport).inc(mapped.accepted)
        if mapped.rejected:
            self.metrics.refused_spans.labels(transport=transport, reason="invalid").inc(mapped.rejected)
        return ExportResult(mapped.rejected, mapped.error_message())

    def _count_cuts(self, mapped: MappedRequest) -> None:
        for limit, count in mapped.limit_hits.items():
            self.metrics.limit_hits.labels(limit=limit).inc(count)
        for kind, count in mapped.value_warnings.items():
            self.metrics.unused_values.labels(kind=kind).inc(count)
        if mapped.redacted_values:
            self.metrics.redactions.labels(kind="value").inc(mapped.redacted_values)
        if mapped.dropped_keys:
            self.metrics.redactions.labels(kind="attribute").inc(mapped.dropped_keys)
