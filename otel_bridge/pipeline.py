"""The one entry point both receivers call: map a request's spans and queue the calls.

An Export is answered OK only after the queue holds its calls; spans that cannot be mapped are reported
back (partial success); a full queue raises QueueFullError so the receiver can ask the client to retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from otel_bridge.errors import QueueFullError
from otel_bridge.limits import SpanLimits
from otel_bridge.mapping import MappedRequest, Rules, map_request
from otel_bridge.queue import MemoryQueue
from otel_bridge.redact import Redaction
from otel_bridge.telemetry import Metrics

__all__ = ["Pipeline", "ExportResult"]


@dataclass(frozen=True, slots=True)
class ExportResult:
    rejected_spans: int
    error_message: str


class Pipeline:
    def __init__(
        self,
        *,
        queue: MemoryQueue,
        rules: Rules,
        limits: SpanLimits,
        redaction: Redaction,
        default_project: str,
        metrics: Metrics,
    ) -> None:
        self.queue = queue
        self.rules = rules
        self.limits = limits
        self.redaction = redaction
        self.default_project = default_project
        self.metrics = metrics

    def map(self, request: object, header_project: str | None) -> MappedRequest:
        return map_request(
            request,
            header_project=header_project,
            default_project=self.default_project,
            rules=self.rules,
            limits=self.limits,
            redaction=self.redaction,
        )

    async def export(self, request: object, *, header_project: str | None, transport: str) -> ExportResult:
        mapped = self.map(request, header_project)
        self._count_cuts(mapped)
        if mapped.calls:
            try:
                await self.queue.put(mapped.calls)
            except QueueFullError:  # the receiver answers "retry later"; nothing of the request is kept
                self.metrics.refused_spans.labels(transport=transport, reason="queue_full").inc(mapped.spans)
                raise
            self.metrics.queue_size_bytes.set(self.queue.size_bytes)
        self.metrics.accepted_spans.labels(transport=transport).inc(mapped.accepted)
        if mapped.rejected:
            self.metrics.refused_spans.labels(transport=transport, reason="invalid").inc(mapped.rejected)
        return ExportResult(mapped.rejected, mapped.error_message())

    def _count_cuts(self, mapped: MappedRequest) -> None:
        for limit, count in mapped.limit_hits.items():
            self.metrics.limit_hits.labels(limit=limit).inc(count)
        if mapped.redacted_values:
            self.metrics.redactions.labels(kind="value").inc(mapped.redacted_values)
        if mapped.dropped_keys:
            self.metrics.redactions.labels(kind="attribute").inc(mapped.dropped_keys)
