"""One aiohttp application served on one endpoint: the OTLP/HTTP receiver and the telemetry endpoint.

aiohttp runs on the same asyncio loop as the grpc.aio server and the exporter, so one process has one loop
and no threads to coordinate.
"""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from otel_bridge.notation import split_endpoint

__all__ = ["HttpServer"]

log = logging.getLogger("otel_bridge")


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "otel-bridge"  # not aiohttp's, which names Python's and its own versions


class HttpServer:
    """start() binds `endpoint` (port 0: any free port, see `.port`); stop() lets in-flight requests finish."""

    def __init__(
        self,
        name: str,
        app: web.Application,
        endpoint: str,
        *,
        config_key: str,
        ssl_context: ssl.SSLContext | None = None,
        security: str = "",
        shutdown_timeout: float = 5.0,
        reuse_port: bool = False,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self._config_key = config_key
        self._ssl_context = ssl_context
        self._security = security
        self._reuse_port = reuse_port  # only where workers share the port (receiver.workers)
        app.on_response_prepare.append(_server_header)
        # No access log: one line per request is noise at span rates; failures are logged where they happen.
        # No auto_decompress: the receiver decompresses itself, so it can bound the decompressed size.
        self._runner = web.AppRunner(
            app, access_log=None, auto_decompress=False, handle_signals=False, shutdown_timeout=shutdown_timeout
        )
        self.port: int | None = None
        self.listening = False

    async def start(self) -> None:
        host, port = split_endpoint(self.endpoint)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or None, port, ssl_context=self._ssl_context, reuse_port=self._reuse_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(f"cannot listen on {self.endpoint} ({self._config_key}): {exc.strerror or exc}") from None
        self.port = self._runner.addresses[0][1]
        self.listening = True
        log.info("%s listening on %s:%d%s", self.name, host, self.port, self._security)

    async def stop(self) -> None:
        self.listening = False
        await self._runner.cleanup()
