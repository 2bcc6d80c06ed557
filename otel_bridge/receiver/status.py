"""Our errors -> the status an exporter gets back, for both receivers: one table, like the Collector's
`internal/errors`. OTLP's rules: https://opentelemetry.io/docs/specs/otlp/#failures (gRPC) and
https://opentelemetry.io/docs/specs/otlp/#failures-1 (HTTP: 429, 502, 503, 504 are the retryable ones).

    error                 gRPC                 HTTP   exporter
    BadRequestError       INVALID_ARGUMENT     400    drops the request                        (not retryable)
    ProjectRefusedError   PERMISSION_DENIED    403    drops the request                        (not retryable)
    OversizedRequestError RESOURCE_EXHAUSTED   413    drops the request (no RetryInfo)         (not retryable)
    QueueError            UNAVAILABLE          503    retries, after RetryInfo / Retry-After   (retryable)
    anything else         INTERNAL             500    drops the request                        (not retryable)

Backpressure carries its delay twice over gRPC: as a google.rpc.RetryInfo in the status details
(grpc-status-details-bin, read by the Collector and the Go/Java SDKs) and as trailing metadata
`google.rpc.retryinfo-bin` (read by the Python SDK's exporter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from otel_bridge.errors import BadRequestError, OversizedRequestError, ProjectRefusedError, QueueError

__all__ = ["WireStatus", "status_of", "grpc_trailing_metadata", "http_headers"]


@dataclass(frozen=True, slots=True)
class WireStatus:
    grpc_code: grpc.StatusCode
    http_status: int
    message: str
    retry_after: float | None = None  # seconds; set only for retryable statuses


# (error class, gRPC code, HTTP status); the first row whose class matches wins.
_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode, int], ...] = (
    # Not retryable: the same bytes will never decode.
    (BadRequestError, grpc.StatusCode.INVALID_ARGUMENT, 400),
    # Not retryable while it lasts: the upstream refuses these projects' API key (it is re-probed).
    (ProjectRefusedError, grpc.StatusCode.PERMISSION_DENIED, 403),
    # Not retryable: the request is larger than the whole queue, so it would never fit.
    (OversizedRequestError, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    # Retryable: the queue frees space as the upstream accepts calls.
    (QueueError, grpc.StatusCode.UNAVAILABLE, 503),
)


def status_of(error: BaseException) -> WireStatus:
    for error_class, code, http_status in _TABLE:
        if isinstance(error, error_class):
            retry_after = None if error_class is OversizedRequestError else getattr(error, "retry_after", None)
            return WireStatus(code, http_status, str(error), retry_after)
    # Not retryable: an error we did not foresee must not turn every exporter's retries into a storm.
    return WireStatus(grpc.StatusCode.INTERNAL, 500, f"internal error: {type(error).__name__}: {error}")


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    nanos = round(seconds * 1e9)
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=nanos // 10**9, nanos=nanos % 10**9))


def grpc_trailing_metadata(status: WireStatus) -> tuple[tuple[str, bytes | str], ...]:
    """The trailing metadata of an aborted RPC: the rich status, and RetryInfo where there is a delay."""
    details = []
    metadata: tuple[tuple[str, bytes | str], ...] = ()
    if status.retry_after is not None:
        retry_info = _retry_info(status.retry_after)
        packed = any_pb2.Any()
        packed.Pack(retry_info)
        details.append(packed)
        metadata = (("google.rpc.retryinfo-bin", retry_info.SerializeToString()),)
    rich = rpc_status.to_status(status_pb2.Status(code=status.grpc_code.value[0], message=status.message, details=details))
    return tuple(rich.trailing_metadata) + metadata


def http_headers(status: WireStatus) -> dict[str, str]:
    """Headers for the HTTP answer: Retry-After in whole seconds (rounded up) where there is a delay."""
    if status.retry_after is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(status.retry_after)))}
