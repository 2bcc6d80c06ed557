"""Wiring: settings -> receivers, pipeline, queue, dispatcher, sender, telemetry endpoint; and the run loop
of `serve`."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from otel_bridge import decode
from otel_bridge.config import RESERVED_FILES, TELEMETRY_MAX_CONNECTIONS, UPSTREAM_MAX_BODY_BYTES, Settings, mask_url
from otel_bridge.notation import format_duration
from otel_bridge.exporter.dead_letter import DeadLetterFile
from otel_bridge.exporter.dispatcher import Dispatcher
from otel_bridge.exporter.file import FileSender
from otel_bridge.exporter.reachability import ReachabilitySender, UpstreamHealth
from otel_bridge.exporter.retry import RetrySender
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.split import SplitSender
from otel_bridge.exporter.timeout import TimeoutSender
from otel_bridge.telemetry.health import Health
from otel_bridge.http_server import HttpServer
from otel_bridge.pipeline import Mapper, Pipeline
from otel_bridge.exporter.queue import CallQueue, open_queue
from otel_bridge.receiver.grpc import GrpcTraceReceiver
from otel_bridge.receiver.http import build_http_receiver
from otel_bridge.telemetry.metrics import Metrics
from otel_bridge.telemetry.server import telemetry_routes
from otel_bridge.traces import TraceStage
from otel_bridge.traces.pending import open_pending

if TYPE_CHECKING:  # confluent-kafka (librdkafka: ~4 MB resident) is loaded only by a bridge that consumes Kafka
    from otel_bridge.receiver.kafka import KafkaTraceReceiver

__all__ = ["Bridge", "build_sender"]

log = logging.getLogger("otel_bridge")


def build_sender(
    settings: Settings, metrics: Metrics, upstream: UpstreamHealth, queue: CallQueue, dead_letter: DeadLetterFile
) -> tuple[Sender, str]:
    """The sender chain behind the queue consumers, outermost first, and where it delivers."""
    exporter = settings.exporter
    weave = exporter.weave
    api_key = weave.api_key.get_secret_value()
    # Transport: one attempt, success or one of our errors (errors.py says which are retryable).
    if api_key:
        from otel_bridge.exporter.weave import WeaveSender  # httpx only where there is a Weave to send to

        sender: Sender = WeaveSender(base_url=weave.base_url, api_key=api_key, max_redirects=weave.max_redirects)
        where = f"{mask_url(weave.base_url)}/v2/{{entity}}/{{project}}/calls/complete"
    else:
        sender = FileSender(exporter.file.path)
        where = f"file {exporter.file.path} (no API key: set WANDB_API_KEY or exporter.weave.api_key to send to Weave)"
    # Timeout: bounds each attempt, so every retry gets the full time.
    sender = TimeoutSender(sender, weave.timeout)
    # Reachability: records each attempt's outcome (timeouts included) for /readyz.
    sender = ReachabilitySender(sender, upstream)
    # Retry: backoff and Retry-After around each request the split layer makes, so a half that fails
    # is retried alone. Skipped when disabled: a retryable failure is then final.
    if exporter.retry.enabled:
        sender = RetrySender(
            sender,
            initial_interval=exporter.retry.initial_interval,
            max_interval=exporter.retry.max_interval,
            max_elapsed_time=exporter.max_elapsed_time,
            metrics=metrics,
            hold=queue.hold,
            release=queue.release,
        )
    # Split and dead-letter: bodies within the upstream's limit; 413 splits, 422 bisects; what the upstream
    # refuses for good goes to the dead-letter file. Outermost, so what it returns is settled: the
    # consumer deletes the batch from the queue, or (401/403, shutdown) keeps it.
    sender = SplitSender(
        sender,
        max_body_bytes=UPSTREAM_MAX_BODY_BYTES,
        dead_letter=dead_letter,
        metrics=metrics,
    )
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
        self.queue = open_queue(
            exporter.queue.directory,
            max_bytes=exporter.queue_max_bytes,
            max_project_share=exporter.queue.max_project_share,
        )
        queue = self.queue
        self.metrics.watch_queue(
            lambda: queue.size_bytes, lambda: queue.size_calls, lambda: len(queue.paused_projects()), exporter.queue_max_bytes
        )
        pending = open_pending(exporter.queue.directory)
        files = [state for state in (queue.store.state, pending.state) if state is not None]
        if files:
            self.metrics.watch_files(files, lambda: queue.lost_calls)
        mapper = Mapper.from_config(settings.mapping)
        self.stage = TraceStage(
            settings.traces,
            rules=mapper.rules,
            queue=self.queue,
            pending=pending,
            metrics=self.metrics,
        )
        self.pipeline = Pipeline(
            queue=self.queue, mapper=mapper, default_project=exporter.weave.project, metrics=self.metrics, stage=self.stage
        )
        self.upstream = UpstreamHealth()
        # One file, one lock: calls the upstream refuses, and Kafka messages no call can be made of.
        self.dead_letter = DeadLetterFile(exporter.dead_letter.path)
        self.sender, self.destination = build_sender(settings, self.metrics, self.upstream, self.queue, self.dead_letter)
        self.dispatcher = Dispatcher(
            self.queue,
            self.sender,
            exporter.batch,
            consumers=exporter.queue.num_consumers,
            metrics=self.metrics,
            blocked_retry_interval=exporter.retry.max_interval,
            report_interval=settings.telemetry.degraded_log_interval,
        )
        receiver = settings.receiver
        grace = min(settings.shutdown_timeout, 5.0)  # for requests in flight; the queue drains afterwards
        shared = receiver.workers > 1  # every worker binds the same ports (supervisor.py)
        self.open_files = _open_file_limit()
        self.max_connections = receiver.max_connections(self.open_files)
        self.grpc = (
            GrpcTraceReceiver(
                receiver.grpc,
                self.pipeline,
                max_connections=self.max_connections["grpc"],
                shutdown_timeout=grace,
                reuse_port=shared,
            )
            if receiver.grpc
            else None
        )
        self.http = (
            build_http_receiver(
                receiver.http,
                self.pipeline,
                shutdown_timeout=grace,
                max_connections=self.max_connections["http"],
                log_interval=settings.telemetry.degraded_log_interval,
                reuse_port=shared,
            )
            if receiver.http
            else None
        )
        self.kafka: KafkaTraceReceiver | None = None
        if receiver.kafka:
            from otel_bridge.receiver.kafka import KafkaTraceReceiver

            self.kafka = KafkaTraceReceiver(receiver.kafka, self.pipeline, dead_letter=self.dead_letter)
        self.health = Health(
            receivers=[r for r in (self.grpc, self.http, self.kafka) if r is not None],
            queue_size=lambda: self.queue.size_bytes,
            queue_capacity=exporter.queue_max_bytes,
            upstream=self.upstream,
            config=settings.telemetry.readiness,
            files=files,
        )
        endpoint = settings.telemetry.endpoint
        self.telemetry = None
        if endpoint:
            self.telemetry = HttpServer(
                "telemetry endpoint",
                telemetry_routes(self.health, self.metrics),
                endpoint,
                config_key="telemetry.endpoint",
                max_connections=TELEMETRY_MAX_CONNECTIONS,
                max_connections_key="the fixed bound of telemetry.endpoint",
                log_interval=settings.telemetry.degraded_log_interval,
            )

    async def start(self) -> None:
        """Start everything or nothing: when a port cannot be bound, what already started is stopped again."""
        self.dispatcher.start()
        self.stage.start()
        started: list[GrpcTraceReceiver | HttpServer | KafkaTraceReceiver] = []
        try:
            for server in (self.grpc, self.http, self.kafka, self.telemetry):
                if server is not None:
                    await server.start()
                    started.append(server)
        except BaseException:
            for server in reversed(started):
                await server.stop()
            await self.stage.stop()
            await self.dispatcher.drain(0)
            await self.sender.close()
            await self.queue.close()
            raise
        log.info("sending calls to %s", self.destination)
        log.info("decoding requests with the %s", "C extension" if decode.NATIVE else "pure-Python decoder (no C extension)")
        log.info(
            "queue: %s, up to %d bytes (exporter.queue); calls the upstream refuses go to %s (exporter.dead_letter.path)",
            self.queue.store.description,
            self.queue.max_bytes,
            self.settings.exporter.dead_letter.path,
        )
        if self.settings.exporter.weave.project:
            log.info("spans that name no project go to %s (exporter.weave.project)", self.settings.exporter.weave.project)
        self._log_connection_bounds()

    def _log_connection_bounds(self) -> None:
        if not self.max_connections:  # only receiver.kafka: the bridge listens for no client
            return
        bounds = ", ".join(f"{count} {name}" for name, count in self.max_connections.items())
        log.info(
            "connections open at once: at most %s (receiver.*.max_connections), %d telemetry; open-file limit %d",
            bounds, TELEMETRY_MAX_CONNECTIONS, self.open_files,
        )
        needed = sum(self.max_connections.values()) + RESERVED_FILES
        if needed > self.open_files:
            log.warning(
                "receiver.*.max_connections (%s) and the %d other files the bridge needs exceed the open-file limit "
                "%d (ulimit -n): when it is reached, new connections wait and /healthz may not answer; "
                "raise the limit or lower the bounds",
                bounds, RESERVED_FILES, self.open_files,
            )

    async def stop(self) -> None:
        """Receivers first (nothing new arrives), then deliver what can be within shutdown_timeout and keep the
        rest (if durable), then the telemetry endpoint, which keeps answering probes while the queue drains."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        receivers = (self.grpc, self.http, self.kafka)
        await asyncio.gather(*(receiver.stop() for receiver in receivers if receiver is not None))
        await self.stage.stop()  # held calls into the queue, to be drained with the others
        self.pipeline.close()
        await self.dispatcher.drain(max(0.0, deadline - time.monotonic()))
        await self.sender.close()
        await self.queue.close()
        if self.telemetry:
            await self.telemetry.stop()
        log.info("stopped")


def _open_file_limit() -> int:
    """The files this process may open (RLIMIT_NOFILE's soft limit); unlimited counts as 2**30."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


async def serve(settings: Settings, *, on_ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain and return. `on_ready` is called once every port is bound."""
    bridge = Bridge(settings)
    await bridge.start()
    if on_ready is not None:
        on_ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %s (shutdown_timeout)", format_duration(settings.shutdown_timeout))
    await bridge.stop()
