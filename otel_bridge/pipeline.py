"""The one entry point both receivers call: decode a request, map its spans and queue the calls.

An Export is answered OK only after the queue holds its calls (committed, when the queue is durable);
spans that cannot be mapped are reported back (partial success); a full queue raises QueueFullError so
the receiver can ask the client to retry (receiver/status.py). Nothing is accepted and then dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from otel_bridge.config import Mapping as MappingConfig
from otel_bridge.decode import count_spans, decode_request
from otel_bridge.decode.limits import SpanLimits, limit_warnings
from otel_bridge.decode.redact import Redaction, compile_redaction
from otel_bridge.decode.sanitize import Sanitizer
from otel_bridge.errors import OversizedRequestError, QueueError, QueueFullError
from otel_bridge.exporter.queue import CallQueue
from otel_bridge.decode.logs import decode_logs
from otel_bridge.mapping import MappedRequest, Rules, build_rules, map_resource_spans
from otel_bridge.mapping.request import CallHook
from otel_bridge.telemetry.metrics import Metrics
from otel_bridge.traces import TraceStage

__all__ = ["ExportResult", "Mapper", "Pipeline", "map_request"]


def map_request(
    data: bytes,
    *,
    header_project: str | None,
    default_project: str,
    rules: Rules,
    limits: SpanLimits,
    redaction: Redaction,
    on_call: CallHook | None = None,
) -> MappedRequest:
    """Decode, then map: the calls of a serialized request, limits and redaction applied while the bytes are
    decoded, so no call holds what they remove. Raises BadRequestError when `data` is not an
    ExportTraceServiceRequest."""
    sanitizer = Sanitizer(limits, redaction)
    decoded = decode_request(data, sanitizer)
    mapped = map_resource_spans(
        decoded, header_project=header_project, default_project=default_project, rules=rules, on_call=on_call
    )
    # The spans were decoded as the mapping iterated them: only now is the tally complete.
    mapped.limit_hits = sanitizer.hits
    mapped.warnings = limit_warnings(sanitizer.hits, limits)
    mapped.redacted_values = sanitizer.redacted_values
    mapped.dropped_keys = sanitizer.dropped_keys
    return mapped


@dataclass(frozen=True, slots=True)
class Mapper:
    """map_request with what a config's `mapping:` section says, compiled once. `serve` and `convert` both
    build it here, so convert prints exactly the calls the bridge would queue."""

    rules: Rules
    limits: SpanLimits
    redaction: Redaction

    @classmethod
    def from_config(cls, mapping: MappingConfig) -> Mapper:
        return cls(build_rules(mapping.edits()), SpanLimits.from_config(mapping.limits), compile_redaction(mapping.redact))

    def map(
        self, data: bytes, *, header_project: str | None, default_project: str, on_call: CallHook | None = None
    ) -> MappedRequest:
        """The calls of a serialized request; BadRequestError when the bytes are not one."""
        return map_request(
            data,
            header_project=header_project,
            default_project=default_project,
            rules=self.rules,
            limits=self.limits,
            redaction=self.redaction,
            on_call=on_call,
        )


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
        stage: TraceStage,
    ) -> None:
        self.queue = queue
        self.mapper = mapper
        self.default_project = default_project
        self.metrics = metrics
        self.stage = stage

    def map(self, data: bytes, header_project: str | None, on_call: CallHook | None = None) -> MappedRequest:
        return self.mapper.map(data, header_project=header_project, default_project=self.default_project, on_call=on_call)

    async def export(self, data: bytes, *, header_project: str | None, transport: str) -> ExportResult:
        """Map and queue the calls of a serialized ExportTraceServiceRequest. Raises BadRequestError when
        the bytes are not one, QueueError when the queue refuses its calls."""
        spans = None
        try:
            # While the queue is full, refuse before mapping: the calls of a request are at least as large
            # as its protobuf encoding, so it could not fit, and exporters' retries then cost little CPU.
            self.queue.check_room(len(data))
            traced = self.stage.begin()
            mapped = self.map(data, header_project, traced.on_call)
            spans = mapped.spans
            self.metrics.received_spans.labels(transport=transport).inc(spans)
            if mapped.calls:
                await self.queue.put(mapped.calls)
            await self.stage.settle(traced, mapped.held)
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

    async def export_logs(self, data: bytes, *, transport: str) -> int:
        """Join the GenAI records of a serialized ExportLogsServiceRequest to their spans' calls (traces/);
        the others are counted. Returns the number of records. Raises BadRequestError when the bytes are
        not one, QueueError when the records cannot be kept now (retry later)."""
        records = decode_logs(data, Sanitizer(self.mapper.limits, self.mapper.redaction))
        self.metrics.received_log_records.labels(transport=transport).inc(len(records))
        await self.stage.export_logs(records)
        return len(records)

    def _count_cuts(self, mapped: MappedRequest) -> None:
        for limit, count in mapped.limit_hits.items():
            self.metrics.limit_hits.labels(limit=limit).inc(count)
        if mapped.redacted_values:
            self.metrics.redactions.labels(kind="value").inc(mapped.redacted_values)
        if mapped.dropped_keys:
            self.metrics.redactions.labels(kind="attribute").inc(mapped.dropped_keys)
