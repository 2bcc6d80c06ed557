"""The one entry point both receivers call: decode a request, map its spans and queue the calls.

An Export is answered OK only after the queue holds its calls (committed, when the queue is durable);
spans that cannot be mapped are reported back (partial success); a full queue raises QueueFullError so
the receiver can ask the client to retry (receiver/status.py). Nothing is accepted and then dropped.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from otel_bridge.config import Mapping as MappingConfig
from otel_bridge.decode import NATIVE, count_spans, decode_request
from otel_bridge.decode.decoded import ResourceSpans
from otel_bridge.decode.limits import SpanLimits, limit_warnings
from otel_bridge.decode.redact import Redaction, compile_redaction
from otel_bridge.decode.sanitize import Sanitizer
from otel_bridge.errors import OversizedRequestError, ProjectRefusedError, QueueError, QueueFullError
from otel_bridge.exporter.queue import CallQueue
from otel_bridge.decode.logs import decode_logs
from otel_bridge.mapping import MappedRequest, Rules, build_rules, map_resource_spans
from otel_bridge.mapping.request import CallHook, route
from otel_bridge.telemetry.metrics import Metrics, ReceiverReport
from otel_bridge.traces import TraceStage

__all__ = ["DecodedRequest", "ExportResult", "MIN_CALL_BYTES", "Mapper", "Pipeline", "decode", "map_decoded", "map_request"]

# The fewest bytes of queue a span's call takes: a span with no attributes, routed to `e/p`, maps to 1006
# bytes (tests/test_pipeline.py checks this stays a lower bound). Counting the spans (a fast walk of the
# bytes) and multiplying bounds what mapping a request will cost before any of it is done: 400k minimal spans
# fit in a 2 MB gzip body, and mapping them took 3.2 GB and 10 s before the queue refused the calls.
MIN_CALL_BYTES = 1000
_ADMIT_INLINE_BYTES = 1024 * 1024


@dataclass(slots=True)
class DecodedRequest:
    """A request's bytes, checked whole, with its resources and scopes decoded; its spans are decoded as
    map_decoded reaches them (with the native decoder), limits and redaction applied by `sanitizer`."""

    resource_spans: list[ResourceSpans]
    sanitizer: Sanitizer

    def projects(self, *, header_project: str | None, default_project: str) -> list[str]:
        """The projects its spans route to (mapping/request.py's rules), known before they are decoded."""
        routed = (
            route(resources.routing, header_project=header_project, default_project=default_project)[0]
            for resources in self.resource_spans
        )
        return list(dict.fromkeys(project for project in routed if project is not None))


def decode(data: bytes, *, limits: SpanLimits, redaction: Redaction) -> DecodedRequest:
    """Raises BadRequestError when `data` is not an ExportTraceServiceRequest."""
    sanitizer = Sanitizer(limits, redaction)
    return DecodedRequest(decode_request(data, sanitizer), sanitizer)


def map_decoded(
    decoded: DecodedRequest,
    *,
    header_project: str | None,
    default_project: str,
    rules: Rules,
    on_call: CallHook | None = None,
) -> MappedRequest:
    """The calls of a decoded request; limits and redaction were applied as its bytes were decoded, so no
    call holds what they remove."""
    mapped = map_resource_spans(
        decoded.resource_spans, header_project=header_project, default_project=default_project, rules=rules,
        on_call=on_call,
    )
    # The spans were decoded as the mapping iterated them: only now is the tally complete.
    sanitizer = decoded.sanitizer
    mapped.limit_hits = sanitizer.hits
    mapped.warnings = limit_warnings(sanitizer.hits, sanitizer.limits)
    mapped.redacted_values = sanitizer.redacted_values
    mapped.dropped_keys = sanitizer.dropped_keys
    return mapped


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
    """Decode, then map: the calls of a serialized request. Raises BadRequestError when `data` is not an
    ExportTraceServiceRequest."""
    return map_decoded(
        decode(data, limits=limits, redaction=redaction),
        header_project=header_project, default_project=default_project, rules=rules, on_call=on_call,
    )


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
        return self.map_decoded(
            self.decode(data), header_project=header_project, default_project=default_project, on_call=on_call
        )

    def decode(self, data: bytes) -> DecodedRequest:
        return decode(data, limits=self.limits, redaction=self.redaction)

    def map_decoded(
        self,
        decoded: DecodedRequest,
        *,
        header_project: str | None,
        default_project: str,
        on_call: CallHook | None = None,
    ) -> MappedRequest:
        return map_decoded(
            decoded, header_project=header_project, default_project=default_project, rules=self.rules, on_call=on_call
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
        # Decoding and mapping are CPU-bound Python: in one thread of their own, the event loop keeps
        # accepting, answering probes and refusing (503, 401) while a large request maps. One thread, so
        # requests map one at a time (as on the loop) and their peak memory does not add up.
        self._mapping = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mapping")
        self.stage = stage
        # A call takes about MIN_CALL_BYTES plus this many bytes per protobuf byte of its span: calls are
        # JSON and repeat content in otel_dump (about 1.8 for LLM spans). Learned from the last requests
        # (0 until one is mapped), so a request reserves about what its calls will take.
        self._bytes_per_byte = 0.0

    def close(self) -> None:
        self._mapping.shutdown(wait=True)

    def map(self, decoded: DecodedRequest, header_project: str | None, on_call: CallHook | None = None) -> MappedRequest:
        return self.mapper.map_decoded(
            decoded, header_project=header_project, default_project=self.default_project, on_call=on_call
        )

    def _admit(self, data: bytes) -> tuple[int, DecodedRequest]:
        return count_spans(data), self.mapper.decode(data)

    async def export(self, data: bytes, *, header_project: str | None, transport: str) -> ExportResult:
        """Map and queue the calls of a serialized ExportTraceServiceRequest. Raises BadRequestError when
        the bytes are not one, QueueError when the queue refuses its calls."""
        loop = asyncio.get_running_loop()
        report = self.metrics.receiver(transport)
        spans = None
        try:
            # Refuse before mapping what could not fit: the calls of a request are at least as large as its
            # protobuf encoding, and at least MIN_CALL_BYTES per span; exporters' retries then cost little.
            # Checking the bytes (and counting the spans, about 0.1 µs each) and decoding the resources, which
            # name the projects: inline for bodies done within a few milliseconds, so bad and oversized
            # requests are refused at once, not after the mapping in progress.
            if len(data) <= _ADMIT_INLINE_BYTES and NATIVE:
                counted, decoded = self._admit(data)
            else:
                counted, decoded = await loop.run_in_executor(self._mapping, self._admit, data)
            # The room its calls are expected to take is held while it maps, in the queue and in each of its
            # projects' shares: requests waiting for the mapping thread would otherwise all pass, be mapped,
            # and be refused at put() but one (under overload, 5 requests mapped for each one queued). At
            # most a share is expected, so an empty queue always takes a request that can fit. A request for
            # several projects holds the whole of it in each share: not knowing their spans' split, the
            # safe side is refusing early, never mapping for nothing.
            least = max(len(data), counted * MIN_CALL_BYTES)
            projects = decoded.projects(header_project=header_project, default_project=self.default_project)
            most = self.queue.max_project_bytes if projects else self.queue.max_bytes
            expected = max(least, min(counted * MIN_CALL_BYTES + int(len(data) * self._bytes_per_byte), most))
            reservation = self.queue.reserve(expected, projects)
            try:
                traced = self.stage.begin()
                mapped = await loop.run_in_executor(self._mapping, self.map, decoded, header_project, traced.on_call)
                spans = mapped.spans
                report.spans_received(spans)
                self._learn_call_size(len(data), mapped)
                refused = self._refuse_blocked(mapped, report)
                if mapped.calls:
                    await self.queue.put(mapped.calls, reservation)
            finally:
                reservation.release()
            await self.stage.settle(traced, mapped.held)
        except QueueError as exc:  # the receiver answers with status_of(exc); nothing of the request is kept
            if spans is None:  # refused before decoding: counted, for the metrics
                spans = counted
                report.spans_received(spans)
            reason = {QueueFullError: "queue_full", OversizedRequestError: "too_large"}.get(type(exc), "queue_error")
            report.spans_refused(reason, spans)
            raise
        self.metrics.decode.cuts(mapped.limit_hits, mapped.redacted_values, mapped.dropped_keys)
        self.metrics.decode.unused_values(mapped.value_warnings)
        report.spans_accepted(mapped.accepted)
        if mapped.rejected > refused:
            report.spans_refused("invalid", mapped.rejected - refused)
        return ExportResult(mapped.rejected, mapped.error_message())

    def _learn_call_size(self, request_bytes: int, mapped: MappedRequest) -> None:
        if not request_bytes or not mapped.accepted:
            return
        call_bytes = sum(len(call) for calls in mapped.calls.values() for call in calls)
        call_bytes += sum(len(held[3]) for held in mapped.held)
        sample = max(0, call_bytes - mapped.accepted * MIN_CALL_BYTES) / request_bytes
        self._bytes_per_byte = 0.75 * self._bytes_per_byte + 0.25 * sample if self._bytes_per_byte else sample

    async def export_logs(self, data: bytes, *, transport: str) -> int:
        """Join the GenAI records of a serialized ExportLogsServiceRequest to their spans' calls (traces/);
        the others are counted. Returns the number of records. Raises BadRequestError when the bytes are
        not one, QueueError when the records cannot be kept now (retry later)."""
        records = decode_logs(data, Sanitizer(self.mapper.limits, self.mapper.redaction))
        self.metrics.received_log_records.labels(transport=transport).inc(len(records))
        await self.stage.export_logs(records)
        return len(records)

    def _refuse_blocked(self, mapped: MappedRequest, report: ReceiverReport) -> int:
        """Spans for a project whose API key the upstream refuses right now are not queued: they could only
        fill the queue (delivery re-probes the project every exporter.retry.max_interval). When no span is
        left, the whole request is refused (PERMISSION_DENIED / 403), else they are rejected in partial_success."""
        blocked = [project for project in mapped.calls if self.queue.blocked(project)]
        if not blocked:
            return 0
        reason = (
            "the upstream refuses this project's API key (401/403) at the moment; check exporter.weave.api_key / "
            "WANDB_API_KEY and that the key may write to it (tried again every exporter.retry.max_interval)"
        )
        refused = sum(mapped.refuse_project(project, reason) for project in blocked)
        report.spans_refused("project_refused", refused)
        if not mapped.calls and refused == mapped.spans:
            raise ProjectRefusedError(mapped.error_message())
        return refused
