"""The bytes of an OTLP ExportLogsServiceRequest -> plain log records, with the mapping's limits and
redaction applied to every string, as for spans.

Logs are not the hot path (a few records per model call), so they are parsed with protobuf; the trace
decoder's C extension is for spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_bridge.decode.otlp import any_value, attribute_tree, parse_json_request
from otel_bridge.decode.sanitize import Sanitizer
from otel_bridge.errors import BadRequestError

__all__ = ["LogRecord", "decode_logs", "parse_otlp_logs_json", "count_log_records"]


@dataclass(slots=True)
class LogRecord:
    event_name: str  # LogRecord.event_name, else the attribute event.name; "" when neither
    trace_id: str  # hex; "" when the record is not correlated to a span
    span_id: str
    time_unix_nano: int
    # The record's attribute tree (as a span's, unflattened), with a map body's fields beside them (the
    # attributes win) and any other body under "body".
    tree: dict[str, Any]
    service: str  # resource attribute service.name, "" when unset


def _tree(record: Any, sanitizer: Sanitizer) -> dict[str, Any]:
    tree = attribute_tree(record.attributes, sanitizer)
    if record.HasField("body"):
        body = any_value(record.body, sanitizer, sanitizer.max_depth, "body")
        if type(body) is dict:
            for key, value in body.items():
                tree.setdefault(key, value)
        elif body is not None:
            tree.setdefault("body", body)
    return tree


def _event_name(record: Any, tree: dict[str, Any]) -> str:
    if record.event_name:
        return record.event_name
    event = tree.get("event")
    name = event.get("name") if type(event) is dict else None
    return name if type(name) is str else ""


def _id(value: bytes, length: int) -> str:
    return value.hex() if len(value) == length and any(value) else ""


def decode_logs(data: bytes, sanitizer: Sanitizer) -> list[LogRecord]:
    """Raises BadRequestError when `data` is not an ExportLogsServiceRequest."""
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, ValueError) as exc:
        raise BadRequestError(f"not an OTLP ExportLogsServiceRequest: {exc}") from None
    records = []
    for resource_logs in request.resource_logs:
        service = ""
        for kv in resource_logs.resource.attributes:
            if kv.key == "service.name":
                service = kv.value.string_value
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                tree = _tree(record, sanitizer)
                records.append(
                    LogRecord(
                        event_name=_event_name(record, tree),
                        trace_id=_id(record.trace_id, 16),
                        span_id=_id(record.span_id, 8),
                        time_unix_nano=record.time_unix_nano or record.observed_time_unix_nano,
                        tree=tree,
                        service=service,
                    )
                )
    return records


def count_log_records(data: bytes) -> int:
    """The records of a request refused before decoding, for the metrics; 0 when it does not parse."""
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, ValueError):
        return 0
    return sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)


def parse_otlp_logs_json(data: bytes) -> bytes:
    """An OTLP/JSON ExportLogsServiceRequest -> its protobuf bytes; ValueError says why it is not one."""
    request = parse_json_request(data, ExportLogsServiceRequest, ("resourceLogs", "scopeLogs", "logRecords"), "logs")
    return request.SerializeToString()
