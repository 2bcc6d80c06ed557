"""The error -> wire status table both receivers use."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from otel_bridge.errors import OversizedRequestError, QueueError, QueueFullError
from otel_bridge.receiver.status import grpc_trailing_metadata, http_headers, status_of


def test_a_full_queue_is_unavailable_with_a_delay_on_both_transports():
    status = status_of(QueueFullError("queue is full (exporter.queue.max_bytes)", retry_after=1.5))
    assert (status.grpc_code, status.http_status, status.retry_after) == (grpc.StatusCode.UNAVAILABLE, 503, 1.5)
    assert "exporter.queue.max_bytes" in status.message
    assert http_headers(status) == {"Retry-After": "2"}  # whole seconds, rounded up

    metadata = dict(grpc_trailing_metadata(status))
    rich = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    assert rich.code == grpc.StatusCode.UNAVAILABLE.value[0] and rich.message == status.message
    (detail,) = rich.details
    retry_info = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry_info)
    assert (retry_info.retry_delay.seconds, retry_info.retry_delay.nanos) == (1, 500_000_000)
    # The Python SDK's exporter reads this key instead of the status details.
    assert error_details_pb2.RetryInfo.FromString(metadata["google.rpc.retryinfo-bin"]) == retry_info


def test_a_queue_that_cannot_be_written_is_also_retry_later():
    status = status_of(QueueError("cannot write the queue", retry_after=1.0))
    assert (status.grpc_code, status.http_status) == (grpc.StatusCode.UNAVAILABLE, 503)


def test_an_unforeseen_error_is_internal_and_not_retryable():
    status = status_of(RuntimeError("bug"))
    assert (status.grpc_code, status.http_status, status.retry_after) == (grpc.StatusCode.INTERNAL, 500, None)
    assert http_headers(status) == {}
    assert "google.rpc.retryinfo-bin" not in dict(grpc_trailing_metadata(status))


def test_a_request_larger_than_the_queue_is_too_large_and_not_retryable():
    status = status_of(OversizedRequestError("the request needs more than all of the queue"))
    assert (status.grpc_code, status.http_status, status.retry_after) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 413, None)
    assert http_headers(status) == {}
    assert "google.rpc.retryinfo-bin" not in dict(grpc_trailing_metadata(status))
