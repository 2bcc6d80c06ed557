"""OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export on grpc.aio."""

from __future__ import annotations

import logging
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from otel_bridge.config import GrpcReceiver
from otel_bridge.errors import QueueError
from otel_bridge.pipeline import Pipeline
from otel_bridge.receiver.status import grpc_trailing_metadata, status_of

__all__ = ["GrpcTraceReceiver", "PROJECT_HEADER"]

log = logging.getLogger("otel_bridge.receiver")

PROJECT_HEADER = "project_id"


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def Export(self, request, context):  # noqa: N802 (the gRPC method name)
        started = time.perf_counter()
        try:
            header_project = None
            for key, value in context.invocation_metadata() or ():
                if key == PROJECT_HEADER:
                    header_project = value
            try:
                result = await self.pipeline.export(request, header_project=header_project, transport="grpc")
            except QueueError as exc:
                status = status_of(exc)
                await context.abort(status.grpc_code, status.message, trailing_metadata=grpc_trailing_metadata(status))
            response = trace_service_pb2.ExportTraceServiceResponse()
            if result.rejected_spans:
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
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(pipeline), self._server)
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
