"""The telemetry endpoint (telemetry.endpoint): GET /healthz, /readyz and /metrics.

Plain HTTP without auth, like the Collector's health_check and metrics endpoints: kubelet probes and
Prometheus scrapers carry no credentials, and nothing here reveals a secret or a span.
"""

from __future__ import annotations

import orjson
from prometheus_client.exposition import choose_encoder

from otel_bridge.http_server import Request, Response, Routes
from otel_bridge.telemetry.health import Health
from otel_bridge.telemetry.metrics import Metrics

__all__ = ["telemetry_routes"]

_GET = frozenset({"GET", "HEAD"})


def _json(status: int, body: dict) -> Response:
    return Response(status, orjson.dumps(body), "application/json")


def telemetry_routes(health: Health, metrics: Metrics) -> Routes:
    async def healthz(request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, checks = health.ready()
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})

    async def metrics_page(request: Request) -> Response:
        # Prometheus text format, or OpenMetrics when the scraper asks for it.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, encode(metrics.registry), content_type)

    return {"/healthz": (_GET, healthz), "/readyz": (_GET, readyz), "/metrics": (_GET, metrics_page)}
