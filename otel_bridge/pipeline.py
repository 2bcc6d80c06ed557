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
from otel_bridge.mapping import MappedRequest, Rules, build_rules, map_resource_spans
from otel_bridge.telemetry.metrics import Metrics

__all__ = ["ExportResult", "Mapper", "Pipeline", "map_request"]


def map_request(
    data: bytes,
    *,
    header_project: str | None,
    default_project: str,
    rules: Rules,
    limits: SpanLimits,
    redaction: Redaction,
) -> MappedRequest:
    """Decode, then map: the calls of a serialized request, limits and redaction applied while the bytes are
    decoded, so no call holds what they remove. Raises BadRequestError when `data` is not an
    ExportTraceServiceRequest."""
    sanitizer = Sanitizer(limits, redaction)
    decoded = decode_request(data, sanitizer)
    mapped = map_resource_spans(decoded, header_project=header_project, default_project=default_project, rules=rules)
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

    def map(self, data: bytes, *, header_project: str | None, default_project: str) -> MappedRequest:
        """The calls of a serialized request; BadRequestError when the bytes are not one."""
        return map_request(
            data,
            header_project=header_project,
            default_project=default_project,
            rules=self.rules,
            limits=self.limits,
            redaction=self.redaction,
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
        report = self.metrics.receiver(transport)
        spans = None
        try:
            # While the queue is full, refuse before mapping: the calls of a request are at least as large
            # as its protobuf encoding, so it could not fit, and exporters' retries then cost little CPU.
            self.queue.check_room(len(data))
            mapped = self.map(data, header_project)
            spans = mapped.spans
            report.spans_received(spans)
            if mapped.calls:
                await self.queue.put(mapped.calls)
        except QueueError as exc:  # the receiver answers with status_of(exc); nothing of the request is kept
            if spans is None:  # refused before decoding: count them, for the metrics
                spans = count_spans(data)
                report.spans_received(spans)
            reason = {QueueFullError: "queue_full", OversizedRequestError: "too_large"}.get(type(exc), "queue_error")
            report.spans_refused(reason, spans)
            raise
        self.metrics.decode.cuts(mapped.limit_hits, mapped.redacted_values, mapped.dropped_keys)
        self.metrics.decode.unused_values(mapped.value_warnings)
        report.spans_accepted(mapped.accepted)
        if mapped.rejected:
            report.spans_refused("invalid", mapped.rejected)
        return ExportResult(mapped.rejected, mapped.error_message())
