"""The bridge's own metrics (Prometheus).

Metric names pair a stage with an outcome, like the OpenTelemetry Collector's. Metrics live on a registry
passed in, never the global one, so every bridge (and every test) has its own. Label values (transport,
reason) are part of the contract: dashboards and alerts select on them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from otel_bridge import __version__

__all__ = ["Metrics", "total"]


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
            "Spans rejected (reason=invalid: partial success) or refused (reason=queue_full, queue_error: retry later).",
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


def total(metric: Counter, **label_values: tuple[str, ...]) -> float:
    """A counter's value summed over its labels; keyword arguments keep only samples with those label values."""
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and all(sample.labels.get(k) in v for k, v in label_values.items())
    )
