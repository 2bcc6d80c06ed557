"""Spans/s of Weave's own OTel converter (weave 0.53.12); run by Weave's interpreter, not ours.

    WEAVE_PYTHON bench/weave_speed.py REQUESTS_FILE

REQUESTS_FILE holds serialized ExportTraceServiceRequests, each preceded by its length (4 bytes, little
endian). Prints {"weave_version"}, then for each line SECONDS read from stdin converts them round-robin
for at least SECONDS of CPU time and prints {"spans", "seconds"}; exits at the end of stdin. Slices on
request let bench/mapping.py interleave them with its own, so both sides see the same machine.
What is timed is what Weave's server does per span: Resource.from_proto, Span.from_proto and to_call
(not the JSON serialization that follows, which would only add to Weave's time). Imports nothing from
otel_bridge: it runs where only Weave is installed.
"""

from __future__ import annotations

import json
import struct
import sys
import time

import weave
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from weave.trace_server.opentelemetry.python_spans import Resource, Span

PROJECT_ID = "bench-entity/bench-project"


def read_requests(path: str) -> list[ExportTraceServiceRequest]:
    data = open(path, "rb").read()
    requests, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        request = ExportTraceServiceRequest()
        request.ParseFromString(data[offset + 4 : offset + 4 + size])
        requests.append(request)
        offset += 4 + size
    return requests


def convert(request: ExportTraceServiceRequest) -> int:
    spans = 0
    for resource_spans in request.resource_spans:
        resource = Resource.from_proto(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            for proto_span in scope_spans.spans:
                Span.from_proto(proto_span, resource).to_call(PROJECT_ID)
                spans += 1
    return spans


def main() -> None:
    requests = read_requests(sys.argv[1])
    convert(requests[0])  # warm-up: imports and caches
    print(json.dumps({"weave_version": weave.__version__}), flush=True)
    i = 0
    for line in sys.stdin:
        seconds = float(line)
        spans = 0
        started = time.process_time()
        while True:
            spans += convert(requests[i % len(requests)])
            i += 1
            elapsed = time.process_time() - started
            if elapsed >= seconds:
                break
        print(json.dumps({"spans": spans, "seconds": elapsed}), flush=True)


if __name__ == "__main__":
    main()
