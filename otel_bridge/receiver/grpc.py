"""OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export on grpc.aio, and grpc.health.v1
on the same port (SERVING from start until shutdown begins)."""

from __future__ import annotations

import logging
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otel_bridge.config import GrpcReceiver
from otel_bridge.errors import BadRequestError, ProjectRefusedError, QueueError
from otel_bridge.pipeline import Pipeline
from otel_bridge.receiver.status import grpc_trailing_metadata, status_of
from otel_bridge.receiver import PROJECT_HEADER, describe_security
from otel_bridge.receiver.auth import BearerToken, GrpcBearerAuth
from otel_bridge.receiver.tls import grpc_server_credentials

__all__ = ["GrpcTraceReceiver", "TRACE_SERVICE", "LOGS_SERVICE"]

log = logging.getLogger("otel_bridge.receiver")

TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
LOGS_SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name


class _TraceService:
    """TraceService/Export, taking the request's raw bytes: grpc-python's own deserializer answers garbage
    with a generic error before any handler runs; the pipeline decodes them and answers INVALID_ARGUMENT
    saying why (and parsing them into protobuf messages first would cost more than the decoding)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def handler(self) -> grpc.GenericRpcHandler:
        export = grpc.unary_unary_rpc_method_handler(
            self.export, response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString
        )
        return grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": export})

    async def export(self, data: bytes, context: grpc.aio.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        started = time.perf_counter()
        try:
            header_project = None
            for key, value in context.invocation_metadata() or ():
                if key == PROJECT_HEADER:
                    header_project = value
            try:
                result = await self.pipeline.export(data, header_project=header_project, transport="grpc")
            except (BadRequestError, QueueError, ProjectRefusedError) as exc:
                if isinstance(exc, BadRequestError):
                    self.pipeline.metrics.receiver("grpc").request_refused("bad_request")
                # The status is set and the call returns, rather than context.abort(): abort raises, and that
                # exception's traceback kept this frame's request (and the mapped calls) alive in a reference
                # cycle until the garbage collector ran, which under sustained overload it rarely did.
                status = status_of(exc)
                context.set_code(status.grpc_code)
                context.set_details(status.message)
                context.set_trailing_metadata(grpc_trailing_metadata(status))
                return trace_service_pb2.ExportTraceServiceResponse()
            response = trace_service_pb2.ExportTraceServiceResponse()
            if result.error_message:  # rejections, or limits hit: with 0 rejected, OTLP reads it as a warning
                response.partial_success.rejected_spans = result.rejected_spans
                response.partial_success.error_message = result.error_message
            return response
        finally:
            self.pipeline.metrics.receiver("grpc").request_took(time.perf_counter() - started)


class _BoundedHealth(health.aio.HealthServicer):
    """grpc.health.v1 with at most `max_watches` Watch streams open at once. Watch needs no token and each
    stream holds memory until the client leaves (20,000 took 422 MB); one more is refused at once."""

    def __init__(self, max_watches: int) -> None:
        super().__init__()
        self._max_watches = max_watches
        self._watches = 0

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        if self._watches >= self._max_watches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._max_watches} health Watch streams already open (receiver.grpc.max_health_watches); use Check",
            )
        self._watches += 1
        try:
            await super().Watch(request, context)
        finally:
            self._watches -= 1


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class _LogsService:
    """LogsService/Export: GenAI records joined to their spans' calls (otel_bridge/traces/), raw bytes in as
    for traces."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def handler(self) -> grpc.GenericRpcHandler:
        export = grpc.unary_unary_rpc_method_handler(
            self.export, response_serializer=logs_service_pb2.ExportLogsServiceResponse.SerializeToString
        )
        return grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": export})

    async def export(self, data: bytes, context: grpc.aio.ServicerContext) -> logs_service_pb2.ExportLogsServiceResponse:
        try:
            await self.pipeline.export_logs(data, transport="grpc")
        except (BadRequestError, QueueError) as exc:
            if isinstance(exc, BadRequestError):
                self.pipeline.metrics.refused_requests.labels(transport="grpc", reason="bad_request").inc()
            status = status_of(exc)
            context.set_code(status.grpc_code)
            context.set_details(status.message)
            context.set_trailing_metadata(grpc_trailing_metadata(status))
        return logs_service_pb2.ExportLogsServiceResponse()


class GrpcTraceReceiver:
    """TLS files are read in __init__, so a bad one fails before any port opens."""

    name = "OTLP/gRPC receiver"

    def __init__(
        self,
        config: GrpcReceiver,
        pipeline: Pipeline,
        *,
        max_connections: int,
        shutdown_timeout: float = 5.0,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self._shutdown_timeout = shutdown_timeout
        interceptors = []
        if config.auth is not None:
            report = pipeline.metrics.receiver("grpc")
            token = BearerToken(config.auth.bearer_token.get_secret_value())
            interceptors.append(GrpcBearerAuth(token, on_refused=lambda: report.request_refused("unauthenticated")))
        self._credentials = grpc_server_credentials(config.tls, "receiver.grpc") if config.tls else None
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_recv_msg_size_mib * 1024 * 1024),
                # Off unless workers share the port on purpose: a second bridge on a taken port must fail
                # loudly, not quietly take half the traffic.
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.server_handshake_timeout_ms", _ms(config.handshake_timeout)),
                ("grpc.max_connection_idle_ms", _ms(config.max_connection_idle)),
                ("grpc.keepalive_time_ms", _ms(config.keepalive_time)),
                ("grpc.keepalive_timeout_ms", _ms(config.keepalive_timeout)),
                # gRPC's C core accepts on its own; past this many open connections it closes a new one at
                # once (so the fds left keep the other listeners and /healthz serving).
                ("grpc.max_allowed_incoming_connections", max_connections),
            ],
        )
        self._server.add_generic_rpc_handlers((_TraceService(pipeline).handler(), _LogsService(pipeline).handler()))
        self._health = _BoundedHealth(config.max_health_watches)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port: int | None = None
        self.listening = False

    async def start(self) -> None:
        try:
            if self._credentials is None:
                self.port = self._server.add_insecure_port(self.config.endpoint)
            else:
                self.port = self._server.add_secure_port(self.config.endpoint, self._credentials)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise OSError(f"cannot listen on {self.config.endpoint} (receiver.grpc.endpoint)")
        await self._server.start()
        await self._health.set(TRACE_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(LOGS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self.listening = True
        host = self.config.endpoint.rpartition(":")[0]
        security = describe_security(self.config.tls, self.config.auth)
        log.info("OTLP/gRPC receiver listening on %s:%d%s", host, self.port, security)

    async def stop(self) -> None:
        """NOT_SERVING first, so health-checking load balancers stop sending; in-flight calls get shutdown_timeout."""
        self.listening = False
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self._shutdown_timeout)
