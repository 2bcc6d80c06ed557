"""Pipeline.export on request bytes: decoded and mapped when the queue has room, counted with count_spans
when the queue refuses them before decoding, BadRequestError when they are not a request."""

from __future__ import annotations

import asyncio

import pytest
from spans import request, span

from otel_bridge.config import Mapping
from otel_bridge.errors import BadRequestError, OversizedRequestError
from otel_bridge.pipeline import Mapper, Pipeline
from otel_bridge.exporter.queue import open_queue
from otel_bridge.telemetry.metrics import Metrics, total

ROUTED = {"wandb.entity": "e", "wandb.project": "p"}


def _pipeline(max_bytes: int) -> Pipeline:
    return Pipeline(
        queue=open_queue(None, max_bytes=max_bytes), mapper=Mapper.from_config(Mapping()), default_project="", metrics=Metrics()
    )


def _two_spans() -> bytes:
    return request(span("a", span_id=b"\x01" * 8), span("b", span_id=b"\x02" * 8, end=0), resource=ROUTED).SerializeToString()


def test_export_maps_the_bytes_and_counts_the_spans() -> None:
    pipeline = _pipeline(1_000_000)
    result = asyncio.run(pipeline.export(_two_spans(), header_project=None, transport="grpc"))
    assert result.rejected_spans == 1 and "end_time_unix_nano is missing" in result.error_message
    metrics = pipeline.metrics
    assert total(metrics.received_spans, transport=("grpc",)) == 2
    assert total(metrics.accepted_spans) == 1
    assert total(metrics.refused_spans, reason=("invalid",)) == 1
    assert pipeline.queue.size_calls == 1


def test_spans_refused_before_decoding_are_counted() -> None:
    pipeline = _pipeline(10)  # smaller than any request: refused before it is decoded
    with pytest.raises(OversizedRequestError):
        asyncio.run(pipeline.export(_two_spans(), header_project=None, transport="http"))
    metrics = pipeline.metrics
    assert total(metrics.received_spans, transport=("http",)) == 2
    assert total(metrics.refused_spans, transport=("http",), reason=("too_large",)) == 2
    assert total(metrics.accepted_spans) == 0


@pytest.mark.parametrize("max_bytes", [1_000_000, 2], ids=["room", "no-room"])
def test_bytes_that_are_not_a_request_are_a_bad_request(max_bytes: int) -> None:
    pipeline = _pipeline(max_bytes)
    with pytest.raises(BadRequestError, match="is not a protobuf ExportTraceServiceRequest"):
        asyncio.run(pipeline.export(b"\xff\xff\xff", header_project=None, transport="grpc"))
    assert total(pipeline.metrics.received_spans) == 0
    assert total(pipeline.metrics.refused_spans) == 0
