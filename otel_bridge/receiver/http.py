"""OTLP/HTTP: POST /v1/traces and /v1/logs, protobuf or JSON, plain, gzip or deflate.

A thin adapter over Pipeline.export, the one the gRPC receiver calls: it picks a codec from the
Content-Type, answers in the request's encoding, and turns each failure into the OTLP/HTTP status:

    401 missing or wrong bearer token (receiver.http.auth)     not retryable
    400 body that does not decode (bad protobuf, JSON, gzip)   not retryable
    408 body not received within receiver.http.read_timeout     retryable
    413 body over receiver.http.max_request_body_size_mib       not retryable (compressed or not)
    415 Content-Type or Content-Encoding not supported          not retryable
    503 a connection past receiver.http.max_connections         retryable, answered before the request is read
    413/503 what the queue refuses: receiver/status.py, the table both receivers share
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_bridge.config import HttpReceiver
from otel_bridge.errors import BadRequestError, ProjectRefusedError, QueueError
from otel_bridge.receiver.status import http_headers, status_of
from otel_bridge.http_server import HttpServer, Request, Response, Routes
from otel_bridge.decode.logs import parse_otlp_logs_json
from otel_bridge.decode.otlp import parse_otlp_json
from otel_bridge.pipeline import Pipeline
from otel_bridge.receiver import PROJECT_HEADER, describe_security
from otel_bridge.receiver.auth import UNAUTHENTICATED_MESSAGE, BearerToken
from otel_bridge.receiver.inflate import InflateError, TooLargeError, inflate
from otel_bridge.receiver.tls import server_ssl_context

__all__ = ["TRACES_PATH", "LOGS_PATH", "build_http_receiver", "otlp_http_routes"]

TRACES_PATH = "/v1/traces"
LOGS_PATH = "/v1/logs"


def _encode_json(message: Any) -> bytes:
    return json_format.MessageToJson(message, indent=None).encode()


def _json_to_protobuf(body: bytes) -> bytes:
    return parse_otlp_json(body).SerializeToString()


@dataclass(frozen=True, slots=True)
class _Codec:
    content_type: str
    # The body -> the protobuf bytes pipeline.export decodes; a ValueError says why it cannot be.
    to_protobuf: Callable[[bytes], bytes]
    encode: Callable[[Any], bytes]
    logs_to_protobuf: Callable[[bytes], bytes]


def _same(body: bytes) -> bytes:
    return body


_PROTOBUF = _Codec("application/x-protobuf", _same, lambda m: m.SerializeToString(), _same)
_CODECS = {
    "application/x-protobuf": _PROTOBUF,
    "application/json": _Codec("application/json", _json_to_protobuf, _encode_json, parse_otlp_logs_json),
}
# zlib window bits per Content-Encoding; "deflate" is the zlib format (RFC 9110), as OTLP exporters send it.
_DECOMPRESS_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_IDENTITY = ("", "identity")

_METHOD_NOT_ALLOWED = "405 method not allowed, supported: [POST]"
_UNSUPPORTED_TYPE = f"415 unsupported media type, supported: [{', '.join(sorted(_CODECS))}]"
_UNSUPPORTED_ENCODING = "415 unsupported Content-Encoding {!r}, supported: [gzip, deflate, identity]"
# The google.rpc code in an error body, per HTTP status.
_GRPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    408: code_pb2.DEADLINE_EXCEEDED,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
}


class _Refused(Exception):
    """Raised inside the handler to answer with an error status; `reason` is the metric label."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.headers = headers


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, message.encode(), headers=headers)


def _status(codec: _Codec, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    # OTLP/HTTP: an error body is a google.rpc.Status in the request's encoding.
    body = codec.encode(status_pb2.Status(code=_GRPC_CODE[status], message=message))
    return Response(status, body, codec.content_type, headers)


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = _Refused(413, "too_large", f"request body over {limit} bytes (receiver.http.max_request_body_size_mib)")
    if request.content_length is not None and request.content_length > limit:
        raise too_large  # refused before reading a byte of it
    chunks = []
    size = 0
    async for chunk in request.body_chunks():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _to_protobuf(body: bytes, encoding: str, codec: _Codec, limit: int, logs: bool) -> bytes:
    """The body as the protobuf bytes the pipeline maps: inflated (at most `limit` bytes, so a small bomb
    cannot take the memory a large body may not) and converted from JSON."""
    if encoding not in _IDENTITY:
        try:
            body = inflate(body, _DECOMPRESS_WBITS[encoding], limit)
        except TooLargeError:
            raise _Refused(
                413, "too_large", f"decompressed body over {limit} bytes (receiver.http.max_request_body_size_mib)"
            ) from None
        except InflateError as exc:
            raise _Refused(400, "bad_request", str(exc)) from None
    try:
        return codec.logs_to_protobuf(body) if logs else codec.to_protobuf(body)
    except ValueError as exc:
        raise _Refused(400, "bad_request", str(exc)) from None


def otlp_http_routes(
    pipeline: Pipeline, *, max_body_bytes: int, token: BearerToken | None, read_timeout: float = 60.0
) -> Routes:
    report = pipeline.metrics.receiver("http")

    async def export(request: Request) -> Response:
        if request.method != "POST":
            return _text(405, _METHOD_NOT_ALLOWED, {"Allow": "POST"})
        started = time.perf_counter()
        codec = _CODECS.get(request.content_type)
        logs = request.path == LOGS_PATH
        try:
            if token is not None and not token.accepts(request.headers.get("authorization")):
                raise _Refused(401, "unauthenticated", UNAUTHENTICATED_MESSAGE, {"WWW-Authenticate": "Bearer"})
            if codec is None:
                raise _Refused(415, "unsupported_media_type", _UNSUPPORTED_TYPE)
            encoding = request.headers.get("content-encoding", "").strip().lower()
            if encoding not in _IDENTITY and encoding not in _DECOMPRESS_WBITS:
                raise _Refused(415, "unsupported_media_type", _UNSUPPORTED_ENCODING.format(encoding))
            try:
                async with asyncio.timeout(read_timeout):
                    body = await _read_body(request, max_body_bytes)
            except TimeoutError:
                raise _Refused(
                    408, "timeout", f"request body not received within {read_timeout:g}s (receiver.http.read_timeout)"
                ) from None
            if encoding in _IDENTITY and codec is _PROTOBUF:
                data = body
            else:  # CPU work that grows with the body: in a thread, so the loop keeps serving meanwhile
                data = await asyncio.to_thread(_to_protobuf, body, encoding, codec, max_body_bytes, logs)
            try:
                if logs:
                    await pipeline.export_logs(data, transport="http")
                    return Response(200, codec.encode(ExportLogsServiceResponse()), codec.content_type)
                result = await pipeline.export(data, header_project=request.headers.get(PROJECT_HEADER), transport="http")
            except BadRequestError as exc:  # protobuf bytes that do not decode
                raise _Refused(400, "bad_request", str(exc)) from None
            except (QueueError, ProjectRefusedError) as exc:  # counted by the pipeline, as refused spans
                status = status_of(exc)
                body = codec.encode(status_pb2.Status(code=status.grpc_code.value[0], message=status.message))
                return Response(status.http_status, body, codec.content_type, http_headers(status))
            response = ExportTraceServiceResponse()
            if result.error_message:  # rejections, or limits hit: with 0 rejected, OTLP reads it as a warning
                response.partial_success.rejected_spans = result.rejected_spans
                response.partial_success.error_message = result.error_message
            return Response(200, codec.encode(response), codec.content_type)
        except _Refused as refused:
            report.request_refused(refused.reason)
            if codec is None or refused.status == 415:
                return _text(refused.status, str(refused), refused.headers)
            return _status(codec, refused.status, str(refused), refused.headers)
        finally:
            report.request_took(time.perf_counter() - started)

    return {TRACES_PATH: (None, export), LOGS_PATH: (None, export)}  # None: export answers 405 itself


def build_http_receiver(
    config: HttpReceiver,
    pipeline: Pipeline,
    *,
    shutdown_timeout: float,
    max_connections: int,
    log_interval: float = 30.0,
    reuse_port: bool = False,
) -> HttpServer:
    """The OTLP/HTTP receiver as configured; TLS files are read here, so a bad one fails before any port opens."""
    ssl_context = server_ssl_context(config.tls, "receiver.http") if config.tls else None
    token = BearerToken(config.auth.bearer_token.get_secret_value()) if config.auth else None
    routes = otlp_http_routes(
        pipeline,
        max_body_bytes=config.max_request_body_size_mib * 1024 * 1024,
        token=token,
        read_timeout=config.read_timeout,
    )
    return HttpServer(
        "OTLP/HTTP receiver",
        routes,
        config.endpoint,
        config_key="receiver.http.endpoint",
        ssl_context=ssl_context,
        security=describe_security(config.tls, config.auth),
        shutdown_timeout=shutdown_timeout,
        reuse_port=reuse_port,
        idle_timeout=config.idle_timeout,
        max_connections=max_connections,
        max_connections_key="receiver.http.max_connections",
        log_interval=log_interval,
    )
