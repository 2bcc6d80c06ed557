"""Runs Weave's own OTel converter (weave 0.53.12) on spans; executed by Weave's interpreter, not ours.

stdin:  {"requests": [{"project_id": "entity/project", "request": base64 of an ExportTraceServiceRequest}]}
stdout: {"weave_version": "...", "results": [one per span, in request order: {"call": {...}} or {"error": "..."}]}

The call is Weave's StartedCallSchemaForInsert and EndedCallSchemaForInsert merged, as JSON. This file
imports nothing from otel_bridge: it runs where only Weave is installed.
"""

from __future__ import annotations

import base64
import json
import sys

import weave
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from weave.trace_server.opentelemetry.python_spans import Resource, Span


def convert(project_id: str, request: ExportTraceServiceRequest) -> list[dict]:
    results = []
    for resource_spans in request.resource_spans:
        resource = Resource.from_proto(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            for proto_span in scope_spans.spans:
                try:
                    start, end = Span.from_proto(proto_span, resource).to_call(project_id)
                    call = start.model_dump(mode="json")
                    for key, value in end.model_dump(mode="json").items():
                        if value is not None or key not in call:  # the end schema repeats some start fields empty
                            call[key] = value
                    results.append({"call": call})
                except Exception as exc:  # Weave rejects the span; the test counts why
                    results.append({"error": f"{type(exc).__name__}: {exc}", "id": proto_span.span_id.hex()})
    return results


def main() -> None:
    job = json.load(sys.stdin)
    results = []
    for item in job["requests"]:
        request = ExportTraceServiceRequest()
        request.ParseFromString(base64.b64decode(item["request"]))
        results.extend(convert(item["project_id"], request))
    json.dump({"weave_version": weave.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
