"""OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export on grpc.aio."""

from __future__ import annotations

import logging
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otel_bridge.config import GrpcReceiver
from otel_bridge.errors import BadRequestError, QueueFullError
from otel_bridge.otlp import decode_request
from otel_bridge.pipeline import Pipeline

__all__ = ["GrpcTraceReceiver", "PROJECT_HEADER"]

log = logging.getLogger("otel_bridge.receiver")

PROJECT_HEADER = "project_id"


_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class _TraceService:
    """TraceService/Export, taking the request's raw bytes: grpc-python's own deserializer answers garbage
    with a generic error before any handler runs; decoding here answers INVALID_ARGUMENT saying why."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def handler(self) -> grpc.GenericRpcHandler:
        export = grpc.unary_unary_rpc_method_handler(
            self.export, response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString
        )
        return grpc.method_handlers_generic_handler(_SERVICE, {"Export": export})

    async def export(self, data: bytes, context: grpc.aio.ServicerContext):
        started = time.perf_counter()
        try:
            try:
                request = decode_request(data)
            except BadRequestError as exc:
                self.pipeline.metrics.refused_requests.labels(transport="grpc", reason="bad_request").inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            header_project = None
            for key, value in context.invocation_metadata() or ():
                if key == PROJECT_HEADER:
                    header_project = value
            try:
                result = await self.pipeline.export(request, header_project=header_project, transport="grpc")
            except QueueFullError as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            response = trace_service_pb2.ExportTraceServiceResponse()
            if result.error_message:  # rejections, or limits hit: with 0 rejected, OTLP reads it as a warning
                response.partial_success.rejected_spans = result.rejected_spans
                response.partial_success.error_message = result.error_message
            return response
        finally:
            self.pipeline.metrics.request_duration.labels(transport="grpc").observe(time.perf_counter() - started)


class GrpcTraceReceiver:
    def __init__(self, config: GrpcReceiver, pipeline: Pipeline) -> None:
        self.config = config
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_recv_msg_size_mib * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        self._server.add_generic_rpc_handlers((_TraceService(pipeline).handler(),))
        self.port: int | None = None

    async def start(self) -> None:
        try:
            self.port = self._server.add_insecure_port(self.config.endpoint)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise OSError(f"cannot listen on {self.config.endpoint} (receiver.grpc.endpoint)")
        await self._server.start()
        host = self.config.endpoint.rpartition(":")[0]
        log.info("OTLP/gRPC receiver listening on %s:%d", host, self.port)

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)
