"""One aiohttp application served on one endpoint: the OTLP/HTTP receiver and the telemetry endpoint.

aiohttp runs on the same asyncio loop as the grpc.aio server and the exporter, so one process has one loop
and no threads to coordinate.
"""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from otel_bridge.listener import Listener
from otel_bridge.notation import split_endpoint

__all__ = ["HttpServer"]

log = logging.getLogger("otel_bridge")


def _refusal(config_key: str) -> bytes:
    """The answer to a connection past the bound, before its request is read: 503, retry in a few seconds."""
    body = f"503 too many connections ({config_key}), retry later".encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nServer: otel-bridge\r\nRetry-After: 5\r\nConnection: close\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "otel-bridge"  # not aiohttp's, which names Python's and its own versions


class HttpServer:
    """start() binds `endpoint` (port 0: any free port, see `.port`); stop() lets in-flight requests finish.

    At most `max_connections` are open at once (`max_connections_key` names the bound); one more is
    answered 503 at once (otel_bridge/listener.py)."""

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
        idle_timeout: float = 75.0,
        max_connections: int,
        max_connections_key: str,
        log_interval: float = 30.0,
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
        # idle_timeout: aiohttp's keep-alive timer, armed at connect and after each answer, closes a
        # connection that has not sent a whole request head by then.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            auto_decompress=False,
            handle_signals=False,
            shutdown_timeout=shutdown_timeout,
            keepalive_timeout=idle_timeout,
        )
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._max_connections_key = max_connections_key
        self._log_interval = log_interval
        self._listener: Listener | None = None
        self.port: int | None = None
        self.listening = False

    async def start(self) -> None:
        host, port = split_endpoint(self.endpoint)
        await self._runner.setup()
        assert self._runner.server is not None
        self._listener = Listener(
            self._runner.server,
            name=self.name,
            max_connections=self._max_connections,
            config_key=self._max_connections_key,
            refusal=_refusal(self._max_connections_key),
            ssl_context=self._ssl_context,
            handshake_timeout=self._idle_timeout,  # the TLS handshake is part of sending a request head
            reuse_port=self._reuse_port,
            log_interval=self._log_interval,
        )
        try:
            self.port = self._listener.bind(host, port)
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(f"cannot listen on {self.endpoint} ({self._config_key}): {exc.strerror or exc}") from None
        self._listener.start()
        self.listening = True
        log.info("%s listening on %s:%d%s", self.name, host, self.port, self._security)

    async def stop(self) -> None:
        self.listening = False
        if self._listener is not None:
            await self._listener.close()
        await self._runner.cleanup()
