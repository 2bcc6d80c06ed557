"""The per-trace stage between mapping and the queue: summary.status_counts rolled up from the descendants
seen, usage counted once per model response, and OTLP log records joined to their span's call."""

from otel_bridge.traces.stage import RequestPass, TraceStage

__all__ = ["RequestPass", "TraceStage"]
