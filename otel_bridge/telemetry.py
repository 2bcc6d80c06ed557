"""The bridge's own metrics (Prometheus).

Metric names pair a stage with an outcome, like the OpenTelemetry Collector's. Metrics live on a registry
passed in, never the global one, so every bridge (and every test) has its own. Label values (transport,
reason) are part of the contract: dashboards and alerts select on them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from otel_bridge import __version__

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.accepted_spans = Counter(
            "otelbridge_receiver_accepted_spans", "Spans mapped to calls and queued.", ["transport"], registry=r
        )
        self.refused_spans = Counter(
            "otelbridge_receiver_refused_spans",
            "Spans rejected (partial success) or refused (queue full, bad request).",
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
        self.request_duration = Histogram(
            "otelbridge_receiver_request_duration_seconds", "Time to answer one Export request.", ["transport"], registry=r
        )
        self.sent_calls = Counter("otelbridge_exporter_sent_calls", "Calls accepted by the upstream.", registry=r)
        self.send_failed_calls = Counter(
            "otelbridge_exporter_send_failed_calls", "Calls given up on (dropped or dead-lettered).", ["reason"], registry=r
        )
        self.retries = Counter("otelbridge_exporter_retries", "Batch send attempts that will be retried.", registry=r)
        self.queue_size_bytes = Gauge("otelbridge_queue_size_bytes", "Bytes of calls in the queue.", registry=r)
        self.queue_capacity_bytes = Gauge("otelbridge_queue_capacity_bytes", "Bound of the queue in bytes.", registry=r)
        Info("otelbridge_build", "The running bridge's version.", registry=r).info({"version": __version__})
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: what resource requests are sized from.
        ProcessCollector(registry=r)
