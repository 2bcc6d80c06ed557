"""The telemetry endpoint (telemetry.endpoint): GET /healthz, /readyz and /metrics.

Plain HTTP without auth, like the Collector's health_check and metrics endpoints: kubelet probes and
Prometheus scrapers carry no credentials, and nothing here reveals a secret or a span.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from otel_bridge.telemetry.health import Health
from otel_bridge.telemetry.metrics import Metrics

__all__ = ["telemetry_app"]


def _json(status: int, body: dict) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def telemetry_app(health: Health, metrics: Metrics) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready, checks = health.ready()
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})

    async def metrics_page(request: web.Request) -> web.Response:
        # Prometheus text format, or OpenMetrics when the scraper asks for it.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(metrics.registry), headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
