"""Wiring: settings -> receivers, pipeline, queue, dispatcher, sender, telemetry endpoint; and the run loop
of `serve`."""

from __future__ import annotations

import asyncio
import logging
import signal

from otel_bridge.config import Settings, format_duration
from otel_bridge.exporter.dispatcher import Dispatcher
from otel_bridge.exporter.file import FileSender
from otel_bridge.exporter.reachability import ReachabilitySender, UpstreamHealth
from otel_bridge.exporter.retry import RetrySender
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.weave import WeaveSender
from otel_bridge.health import Health
from otel_bridge.http_server import HttpServer
from otel_bridge.mapping import DEFAULT_RULES
from otel_bridge.pipeline import Pipeline
from otel_bridge.queue import MemoryQueue
from otel_bridge.receiver.grpc import GrpcTraceReceiver
from otel_bridge.receiver.http import build_http_receiver
from otel_bridge.telemetry import Metrics
from otel_bridge.telemetry_server import telemetry_app

__all__ = ["Bridge"]

log = logging.getLogger("otel_bridge")


def _build_sender(settings: Settings, metrics: Metrics, upstream: UpstreamHealth) -> tuple[Sender, str]:
    """The sender chain, innermost first: transport (Weave or file) < reachability (each attempt) < retry."""
    weave = settings.exporter.weave
    api_key = weave.api_key.get_secret_value()
    if api_key:
        sender: Sender = WeaveSender(base_url=weave.base_url, api_key=api_key, timeout=weave.timeout)
        where = f"{weave.base_url}/v2/{{entity}}/{{project}}/calls/complete"
    else:
        sender = FileSender(settings.exporter.file.path)
        where = f"file {settings.exporter.file.path} (no API key: set WANDB_API_KEY or exporter.weave.api_key to send to Weave)"
    sender = ReachabilitySender(sender, upstream)
    if settings.exporter.retry.enabled:
        sender = RetrySender(sender, settings.exporter.retry, on_retry=metrics.retries.inc)
    return sender, where


class Bridge:
    """One running bridge. `start()` binds the ports; `stop()` stops receiving, drains, and closes.

    Everything that reads a file (TLS certificates) happens in __init__, so a bad file fails before any
    port opens.
    """

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        exporter = settings.exporter
        self.queue = MemoryQueue(max_bytes=exporter.queue.max_bytes)
        self.metrics.queue_capacity_bytes.set(exporter.queue.max_bytes)
        self.pipeline = Pipeline(
            queue=self.queue, rules=DEFAULT_RULES, default_project=exporter.weave.project, metrics=self.metrics
        )
        self.upstream = UpstreamHealth()
        self.sender, self.destination = _build_sender(settings, self.metrics, self.upstream)
        self.dispatcher = Dispatcher(
            self.queue, self.sender, exporter.batch, consumers=exporter.queue.num_consumers, metrics=self.metrics
        )
        receiver = settings.receiver
        grace = min(settings.shutdown_timeout, 5.0)  # for requests in flight; the queue drains afterwards
        self.grpc = GrpcTraceReceiver(receiver.grpc, self.pipeline, shutdown_timeout=grace) if receiver.grpc else None
        self.http = build_http_receiver(receiver.http, self.pipeline, shutdown_timeout=grace) if receiver.http else None
        self.health = Health(
            receivers=[r for r in (self.grpc, self.http) if r is not None],
            queue_size=lambda: self.queue.size_bytes,
            queue_capacity=exporter.queue.max_bytes,
            upstream=self.upstream,
            config=settings.telemetry.readiness,
        )
        endpoint = settings.telemetry.endpoint
        self.telemetry = None
        if endpoint:
            app = telemetry_app(self.health, self.metrics)
            self.telemetry = HttpServer("telemetry endpoint", app, endpoint, config_key="telemetry.endpoint")

    async def start(self) -> None:
        """Start everything or nothing: when a port cannot be bound, what already started is stopped again."""
        self.dispatcher.start()
        started: list[GrpcTraceReceiver | HttpServer] = []
        try:
            for server in (self.grpc, self.http, self.telemetry):
                if server is not None:
                    await server.start()
                    started.append(server)
        except BaseException:
            for server in reversed(started):
                await server.stop()
            await self.dispatcher.drain(0)
            await self.sender.close()
            raise
        log.info("sending calls to %s", self.destination)
        if self.settings.exporter.weave.project:
            log.info("spans that name no project go to %s (exporter.weave.project)", self.settings.exporter.weave.project)

    async def stop(self) -> None:
        """Receivers first (nothing new arrives), then drain the queue, then the telemetry endpoint, which keeps
        answering probes while the queue drains."""
        await asyncio.gather(*(receiver.stop() for receiver in (self.grpc, self.http) if receiver is not None))
        await self.dispatcher.drain(self.settings.shutdown_timeout)
        await self.sender.close()
        if self.telemetry:
            await self.telemetry.stop()
        log.info("stopped")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and return."""
    bridge = Bridge(settings)
    await bridge.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %s (shutdown_timeout)", format_duration(settings.shutdown_timeout))
    await bridge.stop()
