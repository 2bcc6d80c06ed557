"""Wiring: settings -> receivers, pipeline, queue, dispatcher, sender; and the run loop of `serve`."""

from __future__ import annotations

import asyncio
import logging
import signal

from otel_bridge.config import Settings, format_duration
from otel_bridge.exporter.dispatcher import Dispatcher
from otel_bridge.exporter.file import FileSender
from otel_bridge.exporter.retry import RetrySender
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.weave import WeaveSender
from otel_bridge.limits import SpanLimits
from otel_bridge.mapping import DEFAULT_RULES
from otel_bridge.pipeline import Pipeline
from otel_bridge.queue import MemoryQueue
from otel_bridge.receiver.grpc import GrpcTraceReceiver
from otel_bridge.redact import compile_redaction
from otel_bridge.telemetry import Metrics

__all__ = ["Bridge"]

log = logging.getLogger("otel_bridge")


def _build_sender(settings: Settings, metrics: Metrics) -> tuple[Sender, str]:
    """The sender chain, innermost first: transport (Weave or file) < retry."""
    weave = settings.exporter.weave
    api_key = weave.api_key.get_secret_value()
    if api_key:
        sender: Sender = WeaveSender(base_url=weave.base_url, api_key=api_key, timeout=weave.timeout)
        where = f"{weave.base_url}/v2/{{entity}}/{{project}}/calls/complete"
    else:
        sender = FileSender(settings.exporter.file.path)
        where = f"file {settings.exporter.file.path} (no API key: set WANDB_API_KEY or exporter.weave.api_key to send to Weave)"
    if settings.exporter.retry.enabled:
        sender = RetrySender(sender, settings.exporter.retry, on_retry=metrics.retries.inc)
    return sender, where


class Bridge:
    """One running bridge. `start()` binds the ports; `stop()` stops receiving, drains, and closes."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        exporter = settings.exporter
        self.queue = MemoryQueue(max_bytes=exporter.queue.max_bytes)
        self.metrics.queue_capacity_bytes.set(exporter.queue.max_bytes)
        self.pipeline = Pipeline(
            queue=self.queue,
            rules=DEFAULT_RULES,
            limits=SpanLimits.from_config(settings.mapping.limits),
            redaction=compile_redaction(settings.mapping.redact),
            default_project=exporter.weave.project,
            metrics=self.metrics,
        )
        self.sender, self.destination = _build_sender(settings, self.metrics)
        self.dispatcher = Dispatcher(
            self.queue, self.sender, exporter.batch, consumers=exporter.queue.num_consumers, metrics=self.metrics
        )
        self.grpc = GrpcTraceReceiver(settings.receiver.grpc, self.pipeline) if settings.receiver.grpc else None

    async def start(self) -> None:
        self.dispatcher.start()
        if self.grpc:
            await self.grpc.start()
        log.info("sending calls to %s", self.destination)
        if self.settings.exporter.weave.project:
            log.info("spans that name no project go to %s (exporter.weave.project)", self.settings.exporter.weave.project)

    async def stop(self) -> None:
        timeout = self.settings.shutdown_timeout
        if self.grpc:
            await self.grpc.stop(grace=min(timeout, 5.0))
        await self.dispatcher.drain(timeout)
        await self.sender.close()
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
