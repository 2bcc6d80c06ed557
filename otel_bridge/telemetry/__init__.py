"""Telemetry: what the bridge tells about itself: Prometheus metrics (metrics.py), health and readiness
(health.py), the /healthz /readyz /metrics server (server.py) and logging (logs.py)."""
