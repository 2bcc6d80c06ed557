"""Wiring: settings -> receivers, pipeline, queue, dispatcher, sender; and the run loop of `serve`."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from otel_bridge.config import UPSTREAM_MAX_BODY_BYTES, Settings, format_duration
from otel_bridge.exporter.dead_letter import DeadLetterFile
from otel_bridge.exporter.dispatcher import Dispatcher
from otel_bridge.exporter.file import FileSender
from otel_bridge.exporter.retry import RetrySender
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.split import SplitSender
from otel_bridge.exporter.timeout import TimeoutSender
from otel_bridge.exporter.weave import WeaveSender
from otel_bridge.mapping import build_rules
from otel_bridge.pipeline import Pipeline
from otel_bridge.queue import open_queue
from otel_bridge.receiver.grpc import GrpcTraceReceiver
from otel_bridge.telemetry import Metrics

__all__ = ["Bridge", "build_sender"]

log = logging.getLogger("otel_bridge")


def build_sender(settings: Settings, metrics: Metrics) -> tuple[Sender, str]:
    """The sender chain behind the queue consumers, outermost first, and where it delivers."""
    exporter = settings.exporter
    weave = exporter.weave
    api_key = weave.api_key.get_secret_value()
    # Transport: one attempt, success or one of our errors (errors.py says which are retryable).
    if api_key:
        sender: Sender = WeaveSender(base_url=weave.base_url, api_key=api_key)
        where = f"{weave.base_url}/v2/{{entity}}/{{project}}/calls/complete"
    else:
        sender = FileSender(exporter.file.path)
        where = f"file {exporter.file.path} (no API key: set WANDB_API_KEY or exporter.weave.api_key to send to Weave)"
    # Timeout: bounds each attempt, so every retry gets the full time.
    sender = TimeoutSender(sender, weave.timeout)
    # Retry: backoff and Retry-After around each request the split layer makes, so a half that fails
    # is retried alone. Skipped when disabled: a retryable failure is then final.
    if exporter.retry.enabled:
        sender = RetrySender(
            sender,
            initial_interval=exporter.retry.initial_interval,
            max_interval=exporter.retry.max_interval,
            max_elapsed_time=exporter.max_elapsed_time,
            metrics=metrics,
        )
    # Split and dead-letter: bodies within the upstream's limit; 413 splits, 422 bisects; what the upstream
    # refuses for good goes to the dead-letter file. Outermost, so what it returns is settled: the
    # consumer deletes the batch from the queue, or (401/403, shutdown) keeps it.
    sender = SplitSender(
        sender,
        max_body_bytes=UPSTREAM_MAX_BODY_BYTES,
        dead_letter=DeadLetterFile(exporter.dead_letter.path),
        metrics=metrics,
    )
    return sender, where


class Bridge:
    """One running bridge. `start()` binds the ports; `stop()` stops receiving, drains, and closes."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        exporter = settings.exporter
        self.queue = open_queue(exporter.queue.directory, max_bytes=exporter.queue.max_bytes)
        self.metrics.queue_capacity_bytes.set(exporter.queue.max_bytes)
        self.pipeline = Pipeline(
            queue=self.queue,
            rules=build_rules(settings.mapping.edits()),
            default_project=exporter.weave.project,
            metrics=self.metrics,
        )
        self.sender, self.destination = build_sender(settings, self.metrics)
        self.dispatcher = Dispatcher(
            self.queue,
            self.sender,
            exporter.batch,
            consumers=exporter.queue.num_consumers,
            metrics=self.metrics,
            blocked_retry_interval=exporter.retry.max_interval,
            report_interval=settings.telemetry.degraded_log_interval,
        )
        self.grpc = GrpcTraceReceiver(settings.receiver.grpc, self.pipeline) if settings.receiver.grpc else None

    async def start(self) -> None:
        self.dispatcher.start()
        if self.grpc:
            await self.grpc.start()
        log.info("sending calls to %s", self.destination)
        log.info(
            "queue: %s, up to %d bytes (exporter.queue); calls the upstream refuses go to %s (exporter.dead_letter.path)",
            self.queue.store.description,
            self.queue.max_bytes,
            self.settings.exporter.dead_letter.path,
        )
        if self.settings.exporter.weave.project:
            log.info("spans that name no project go to %s (exporter.weave.project)", self.settings.exporter.weave.project)

    async def stop(self) -> None:
        """Stop receiving, deliver what can be within shutdown_timeout, keep the rest (if durable), close."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        if self.grpc:
            await self.grpc.stop(grace=min(self.settings.shutdown_timeout, 5.0))
        await self.dispatcher.drain(max(0.0, deadline - time.monotonic()))
        await self.sender.close()
        await self.queue.close()
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
