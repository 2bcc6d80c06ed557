"""The bridge's own metrics (Prometheus) and logging set-up.

Metric names pair a stage with an outcome, like the OpenTelemetry Collector's. Metrics live on a registry
passed in, never the global one, so every bridge (and every test) has its own.
"""

from __future__ import annotations

import logging
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "setup_logging"]


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
            "Requests refused whole: bad_request is bytes that are not an OTLP trace request.",
            ["transport", "reason"],
            registry=r,
        )
        self.limit_hits = Counter(
            "otelbridge_mapping_limit_hits",
            "Values, attributes, events or links cut by each mapping.limits key; the spans were kept.",
            ["limit"],
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
        self.send_failed_calls = Counter(
            "otelbridge_exporter_send_failed_calls", "Calls given up on (dropped or dead-lettered).", ["reason"], registry=r
        )
        self.retries = Counter("otelbridge_exporter_retries", "Batch send attempts that will be retried.", registry=r)
        self.queue_size_bytes = Gauge("otelbridge_queue_size_bytes", "Bytes of calls in the queue.", registry=r)
        self.queue_capacity_bytes = Gauge("otelbridge_queue_capacity_bytes", "Bound of the queue in bytes.", registry=r)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO; that is noise at our batch rates.
    logging.getLogger("httpx").setLevel(logging.WARNING)
