"""The bridge's own metrics (Prometheus), and the one place that counts what each stage did.

Metric names pair a stage with an outcome, like the OpenTelemetry Collector's. Metrics live on a registry
passed in, never the global one, so every bridge (and every test) has its own. Label values (transport,
reason) are part of the contract: dashboards and alerts select on them.

As the Collector's obsreport does, a stage does not touch counters: it tells its report what happened
(ReceiverReport per transport, DecodeReport, ExporterReport), and the report counts it, in the metrics
and in the plain Tally the degraded-delivery log reads. The queue's gauges read the queue when scraped
(watch_queue), so no stage sets them and nothing reads a metric back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from otel_bridge import __version__

if TYPE_CHECKING:
    from otel_bridge.sqlite_file import FileState  # sqlite3 only where the queue is durable

__all__ = ["DecodeReport", "ExporterReport", "KafkaReport", "Metrics", "ReceiverReport", "Tally", "total"]


@dataclass(slots=True)
class Tally:
    """Running totals for the degraded-delivery log: calls sent, retried and dead-lettered, spans refused
    because the queue could not take them, and batches waiting to be retried now."""

    sent: int = 0
    retried: int = 0
    dead_lettered: int = 0
    refused: int = 0
    in_retry: int = 0


class Metrics:
    """Every counter of the bridge. Label values (transport, reason) are part of the contract."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received_spans = Counter(
            "otelbridge_receiver_received_spans", "Spans in Export requests, before mapping.", ["transport"], registry=r
        )
        self.accepted_spans = Counter(
            "otelbridge_receiver_accepted_spans", "Spans mapped to calls and queued.", ["transport"], registry=r
        )
        self.refused_spans = Counter(
            "otelbridge_receiver_refused_spans",
            "Spans rejected (reason=invalid: partial success; project_refused: the upstream refuses the project's key) "
            "or refused (reason=queue_full, queue_error: retry later).",
            ["transport", "reason"],
            registry=r,
        )
        self.refused_requests = Counter(
            "otelbridge_receiver_refused_requests",
            "Requests refused before their spans were decoded: reason is unauthenticated, too_large, "
            "unsupported_media_type or bad_request.",
            ["transport", "reason"],
            registry=r,
        )
        self.limit_hits = Counter(
            "otelbridge_mapping_limit_hits",
            "Values, attributes, events or links cut by each mapping.limits key; the spans were kept.",
            ["limit"],
            registry=r,
        )
        self.unused_values = Counter(
            "otelbridge_mapping_unused_values",
            "Values the mapping could not use (kind=token_count, model_name, override_time); otel_dump keeps them.",
            ["kind"],
            registry=r,
        )
        self.redactions = Counter(
            "otelbridge_mapping_redactions",
            "Strings where a redaction rule replaced a match (kind=value), attributes dropped by key (kind=attribute).",
            ["kind"],
            registry=r,
        )
        self.received_log_records = Counter(
            "otelbridge_receiver_received_log_records", "Log records in Export requests.", ["transport"], registry=r
        )
        self.log_records = Counter(
            "otelbridge_traces_log_records",
            "GenAI log records joined to their span's call (outcome=joined), dropped because their span did not "
            "arrive within traces.logs.window or they name none (unjoined); other log records, acknowledged and "
            "not delivered (not_delivered).",
            ["outcome"],
            registry=r,
        )
        self.pending_bytes = Gauge(
            "otelbridge_traces_pending_bytes",
            "Bytes of log records waiting for their span and calls waiting for their log records.",
            registry=r,
        )
        self.deduplicated_usage = Counter(
            "otelbridge_traces_deduplicated_usage",
            "Calls whose usage was left out, already counted on a span of the same trace with the same response id.",
            registry=r,
        )
        self.kafka_consumer_lag = Gauge(
            "otelbridge_receiver_kafka_consumer_lag",
            "Messages in each partition this bridge consumes that are not committed yet (high watermark - the "
            "group's committed offset, or before this member's first commit, the first offset it read).",
            ["topic", "partition"],
            registry=r,
        )
        self.kafka_paused = Gauge(
            "otelbridge_receiver_kafka_paused", "1 while consumption is paused because the queue is full.", registry=r
        )
        self.kafka_dead_lettered_messages = Counter(
            "otelbridge_receiver_kafka_dead_lettered_messages",
            "Kafka messages written to the dead-letter file and committed past (reason=undecodable: not an "
            "ExportTraceServiceRequest in the encoding; too_large: more than the whole queue; rejected_spans: "
            "spans the mapping rejects; project_refused: the upstream refuses the key of every project it names).",
            ["topic", "reason"],
            registry=r,
        )
        self.request_duration = Histogram(
            "otelbridge_receiver_request_duration_seconds", "Time to answer one Export request.", ["transport"], registry=r
        )
        self.sent_calls = Counter("otelbridge_exporter_sent_calls", "Calls accepted by the upstream.", registry=r)
        self.retried_calls = Counter(
            "otelbridge_exporter_retried_calls", "Calls in send attempts that failed and will be retried.", registry=r
        )
        self.send_failed_calls = Counter(
            "otelbridge_exporter_send_failed_calls",
            "Calls the upstream never accepted, given up on and dead-lettered "
            "(reason=invalid: 422, too_large: 413, refused: other 4xx, retries_exhausted).",
            ["reason"],
            registry=r,
        )
        self.dead_lettered_calls = Counter(
            "otelbridge_exporter_dead_lettered_calls", "Calls written to the dead-letter file.", registry=r
        )
        self.trimmed_calls = Counter(
            "otelbridge_exporter_trimmed_calls", "Calls whose largest values were truncated to fit a request.", registry=r
        )
        self.batches_in_retry = Gauge(
            "otelbridge_exporter_batches_in_retry", "Batches waiting for their next send attempt.", registry=r
        )
        self.blocked_projects = Gauge(
            "otelbridge_exporter_blocked_projects", "Projects whose delivery is stopped: the API key is refused (401/403).", registry=r
        )
        self.queue_size_calls = Gauge("otelbridge_queue_size_calls", "Calls in the queue (waiting and in flight).", registry=r)
        self.queue_size_bytes = Gauge("otelbridge_queue_size_bytes", "Bytes of calls in the queue.", registry=r)
        self.queue_capacity_bytes = Gauge("otelbridge_queue_capacity_bytes", "Bound of the queue in bytes.", registry=r)
        Info("otelbridge_build", "The running bridge's version.", registry=r).info({"version": __version__})
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: what resource requests are sized from.
        ProcessCollector(registry=r)
        self.tally = Tally()
        self.batches_in_retry.set_function(lambda: self.tally.in_retry)
        self.decode = DecodeReport(self)
        self.exporter = ExporterReport(self)
        self.kafka = KafkaReport(self)
        self._receivers: dict[str, ReceiverReport] = {}

    def receiver(self, transport: str) -> ReceiverReport:
        """The report of one transport's receiver ("grpc", "http")."""
        report = self._receivers.get(transport)
        if report is None:
            report = self._receivers[transport] = ReceiverReport(self, transport)
        return report

    def watch_queue(self, size_bytes: Callable[[], float], size_calls: Callable[[], float],
                    blocked_projects: Callable[[], float], capacity_bytes: float) -> None:
        """The queue's gauges, read from the queue when scraped."""
        self.queue_size_bytes.set_function(size_bytes)
        self.queue_size_calls.set_function(size_calls)
        self.blocked_projects.set_function(blocked_projects)
        self.queue_capacity_bytes.set(capacity_bytes)

    def watch_files(self, files: Sequence[FileState], lost_calls: Callable[[], float]) -> None:
        """The durable queue's files (queue, pending), read when scraped."""
        self.registry.register(_FileCollector(files, lost_calls))


class _FileCollector:
    def __init__(self, files: Sequence[FileState], lost_calls: Callable[[], float]) -> None:
        self._files = files
        self._lost_calls = lost_calls

    def collect(self) -> Iterator[Metric]:
        failing = GaugeMetricFamily(
            "otelbridge_queue_file_write_failing", "1 while the file cannot be written (disk full, I/O error).", labels=["file"]
        )
        set_aside = CounterMetricFamily(
            "otelbridge_queue_file_set_aside", "Damaged files renamed aside and replaced by what could be read.", labels=["file"]
        )
        for state in self._files:
            failing.add_metric([state.name], 1.0 if state.write_error else 0.0)
            set_aside.add_metric([state.name], len(state.set_aside))
        yield failing
        yield set_aside
        yield CounterMetricFamily(
            "otelbridge_queue_lost_calls", "Calls lost with a damaged queue file: they could not be read back.",
            value=self._lost_calls(),
        )


class ReceiverReport:
    """What a receiver and the pipeline did with one transport's requests."""

    __slots__ = ("_metrics", "_transport", "_received", "_accepted", "_duration")

    def __init__(self, metrics: Metrics, transport: str) -> None:
        self._metrics = metrics
        self._transport = transport
        self._received = metrics.received_spans.labels(transport=transport)
        self._accepted = metrics.accepted_spans.labels(transport=transport)
        self._duration = metrics.request_duration.labels(transport=transport)

    def request_refused(self, reason: str) -> None:
        """A request refused before its spans were decoded."""
        self._metrics.refused_requests.labels(transport=self._transport, reason=reason).inc()

    def request_took(self, seconds: float) -> None:
        self._duration.observe(seconds)

    def spans_received(self, count: int) -> None:
        self._received.inc(count)

    def spans_accepted(self, count: int) -> None:
        self._accepted.inc(count)

    def spans_refused(self, reason: str, count: int) -> None:
        """Spans rejected (invalid) or refused with the request (queue_full, too_large, queue_error)."""
        self._metrics.refused_spans.labels(transport=self._transport, reason=reason).inc(count)
        if reason in ("queue_full", "queue_error"):
            self._metrics.tally.refused += count


class DecodeReport:
    """What limits and redaction changed while requests were decoded."""

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def cuts(self, limit_hits: Mapping[str, int], redacted_values: int, dropped_keys: int) -> None:
        for limit, count in limit_hits.items():
            self._metrics.limit_hits.labels(limit=limit).inc(count)
        if redacted_values:
            self._metrics.redactions.labels(kind="value").inc(redacted_values)
        if dropped_keys:
            self._metrics.redactions.labels(kind="attribute").inc(dropped_keys)

    def unused_values(self, by_kind: Mapping[str, int]) -> None:
        """Values the mapping could not use (a token count that is no count, ...), by kind."""
        for kind, count in by_kind.items():
            self._metrics.unused_values.labels(kind=kind).inc(count)


class ExporterReport:
    """What delivery did with batches of calls."""

    __slots__ = ("_metrics", "_tally")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._tally = metrics.tally

    def sent(self, calls: int) -> None:
        self._metrics.sent_calls.inc(calls)
        self._tally.sent += calls

    def retrying(self, calls: int) -> None:
        """A send attempt of `calls` failed and will be retried."""
        self._metrics.retried_calls.inc(calls)
        self._tally.retried += calls

    def retry_wait_started(self) -> None:
        self._tally.in_retry += 1

    def retry_wait_ended(self) -> None:
        self._tally.in_retry -= 1

    def trimmed(self) -> None:
        self._metrics.trimmed_calls.inc()

    def dead_lettered(self, reason: str, calls: int) -> None:
        """Calls the upstream never accepted, written to the dead-letter file."""
        self._metrics.send_failed_calls.labels(reason=reason).inc(calls)
        self._metrics.dead_lettered_calls.inc(calls)
        self._tally.dead_lettered += calls


class KafkaReport:
    """What the Kafka receiver did besides feeding the pipeline (which counts spans as transport "kafka")."""

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def paused(self, paused: bool) -> None:
        self._metrics.kafka_paused.set(1 if paused else 0)

    def dead_lettered(self, topic: str, reason: str) -> None:
        self._metrics.kafka_dead_lettered_messages.labels(topic=topic, reason=reason).inc()

    def lag(self, topic: str, partition: int, messages: int) -> None:
        self._metrics.kafka_consumer_lag.labels(topic=topic, partition=str(partition)).set(messages)

    def partition_gone(self, topic: str, partition: int) -> None:
        """Revoked or lost: its lag is another member's to report."""
        try:
            self._metrics.kafka_consumer_lag.remove(topic, str(partition))
        except KeyError:
            pass


def total(metric: Counter, **label_values: tuple[str, ...]) -> float:
    """A counter's value summed over its labels; keyword arguments keep only samples with those label values."""
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and all(sample.labels.get(k) in v for k, v in label_values.items())
    )
