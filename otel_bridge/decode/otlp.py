"""OTLP decoding helpers: AnyValue -> Python, ids, times, attribute trees, OTLP/JSON.

The attribute trees are built here for the reference decoder (reference.py), which the C decoder must match:
plain functions over protobuf messages, no pydantic, no work a span does not need.
"""

from __future__ import annotations

import base64
import math
import re
import time
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_bridge.decode.sanitize import Sanitizer

__all__ = [
    "CONFLICT_KEY",
    "KEY_SHAPES",
    "any_value",
    "attribute_tree",
    "iso_time",
    "key_path",
    "key_shape",
    "merge_at",
    "parse_json_request",
    "parse_otlp_json",
    "parse_request",
    "short_hex",
]

# Where a scalar goes when the same key also has dotted sub-keys (`x` and `x.y`): Weave's own ingestion
# rejects the whole span then; we keep both values, the scalar under this key of the sub-dict.
CONFLICT_KEY = "_value"

_INF = math.inf

def any_value(value: Any, sanitizer: Sanitizer, levels: int, path: str) -> Any:
    """An OTLP AnyValue -> a JSON-ready Python value (bytes as base64, NaN/Inf as strings like Weave).

    Strings and bytes pass through the sanitizer (redaction, length limit); maps and arrays get `levels`
    more levels; `path` is the dotted key path, matched against the redaction keys inside maps. A map keyed
    exactly "0".."n-1" is the list it stands for, as the same keys sent flattened make one (attribute_tree).
    """
    return _value_of(value, value.WhichOneof("value"), sanitizer, levels, path)


def _value_of(value: Any, kind: str | None, sanitizer: Sanitizer, levels: int, path: str) -> Any:
    if kind == "string_value":
        return sanitizer.text(value.string_value)
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        if number != number or number == _INF or number == -_INF:
            return str(number)
        return number
    if kind == "array_value":
        if levels <= 0:
            return sanitizer.too_deep()
        return [any_value(v, sanitizer, levels - 1, path) for v in value.array_value.values]
    if kind == "kvlist_value":
        if levels <= 0:
            return sanitizer.too_deep()
        checks_keys = sanitizer.key_verdicts is not None
        result = {}
        for kv in value.kvlist_value.values:
            key = kv.key
            key_path = f"{path}.{key}"
            if not checks_keys or not sanitizer.drops(key_path):
                result[key] = any_value(kv.value, sanitizer, levels - 1, key_path)
        return _indexed_list(result) or result
    if kind == "bytes_value":
        return sanitizer.blob(value.bytes_value)
    return None


_JSON_STARTS = ("{", "[", '"')


def _decoded(text: str) -> Any:
    """A string starting like JSON text -> its value when it is JSON; else the string as it is.

    Instrumentations send structured content (messages, parameters) as JSON strings, and MLflow writes
    every value as JSON (`"CHAT_MODEL"` with its quotes). Weave's own ingestion decodes objects and arrays;
    JSON strings are decoded too, so MLflow's model names and span types read as the values they are.
    """
    if text[0] == '"' and (len(text) < 2 or text[-1] != '"'):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _indexed_list(node: dict[str, Any]) -> list[Any] | None:
    """A dict keyed exactly "0".."n-1" (n > 0, in any order) as the list it stands for; else None."""
    n = len(node)
    if n and all(str(i) in node for i in range(n)):
        return [node[str(i)] for i in range(n)]
    return None


def _index_node(items: list[Any], built: set[int]) -> dict[str, Any]:
    node = {str(i): item for i, item in enumerate(items)}
    built.add(id(node))
    return node


def _merged(existing: Any, value: Any, built: set[int]) -> Any:
    """Two values for one place (`x` sent as JSON and as `x.0.y`, a repeated key) -> one, merged as Weave merges
    them and losing nothing: dicts merge key by key, depth first, a list as the dict of its indexes (so a JSON
    array and indexed sub-keys fill each other in); a scalar beside a dict or list is kept under CONFLICT_KEY;
    of two scalars the later wins, as in the OpenTelemetry SDKs. Dicts made of lists join `built`."""
    existing_type, value_type = type(existing), type(value)
    if existing_type is not dict and existing_type is not list and value_type is not dict and value_type is not list:
        return value
    if existing_type is list:
        existing = _index_node(existing, built)
    elif existing_type is not dict:
        existing = {CONFLICT_KEY: existing}
    items = enumerate(value) if value_type is list else value.items() if value_type is dict else ((CONFLICT_KEY, value),)
    for key, item in items:
        key = str(key)
        current = existing.get(key)
        existing[key] = item if current is None else _merged(current, item, built)
    return existing


# Attribute key -> (parent parts, last part, whether a part is an index). The same few dozen keys come in
# every span, so each is split once. Cleared when full, so odd keys cannot grow it without bound. The C
# decoder reads this cache and calls key_shape on a miss: keys are shaped here only.
KEY_SHAPES: dict[str, tuple[tuple[str, ...], str, bool]] = {}
_KEY_SHAPES_MAX = 4096


def key_shape(key: str) -> tuple[tuple[str, ...], str, bool]:
    parts = key.split(".")
    if len(parts) == 1:
        shape: tuple[tuple[str, ...], str, bool] = ((), key, False)
    else:
        shape = (tuple(parts[:-1]), parts[-1], any(part.isdigit() for part in parts))
    if len(KEY_SHAPES) >= _KEY_SHAPES_MAX:
        KEY_SHAPES.clear()
    KEY_SHAPES[key] = shape
    return shape


def key_path(key: str) -> tuple[str, ...]:
    """An attribute key's parts: where attribute_tree puts its value, unless the key is past the depth
    limit (then it is kept whole, where no rule's path can reach it)."""
    parents, last, _ = KEY_SHAPES.get(key) or key_shape(key)
    return (*parents, last)


def attribute_tree(attributes: Any, sanitizer: Sanitizer, *, keys: list[str] | None = None) -> dict[str, Any]:
    """Repeated KeyValue -> a nested dict, split on `.`; JSON strings decoded; dicts built from indexed
    keys (`gen_ai.prompt.0.role`) turned into lists, as kvlists keyed so are (any_value). JSON content keeps
    its shape where no sub-key goes into it.

    Nothing is dropped but what the sanitizer says (see sanitize.py): values that meet at one key merge
    (_merged: `x` as JSON and `x.0.y` fill each other in; a scalar `x` beside `x.y` is kept as
    `{"_value": x, "y": ...}`); keys the redaction rules name are left out; past mapping.limits.max_depth a
    dotted key is kept whole, JSON text stays text and deeper maps and arrays become a marker. With `keys`,
    the key of each attribute kept is appended to it.
    """
    tree: dict[str, Any] = {}
    built: set[int] = set()  # ids of the dicts unflattening made; only these may become lists
    indexed = False
    verdicts = sanitizer.key_verdicts  # redaction's dropped keys; None when there are none to check
    max_depth = sanitizer.max_depth
    for kv in attributes:
        key = kv.key
        if verdicts is not None and verdicts.get(key) is not False and sanitizer.drops(key):
            continue
        if keys is not None:
            keys.append(key)
        parents, last, has_index = KEY_SHAPES.get(key) or key_shape(key)
        if len(parents) >= max_depth:  # more parts than the depth limit
            sanitizer.too_deep_key()
            parents, last, has_index = (), key, False  # kept whole, as sent
        levels = max_depth - len(parents) - 1  # maps and arrays the value may open
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":  # most values: read here, without the dispatch of _value_of
            value = sanitizer.text(value.string_value)
        else:
            value = _value_of(value, kind, sanitizer, levels, key)
        if type(value) is str and value[:1] in _JSON_STARTS:
            decoded = _decoded(value)
            if type(decoded) is str:
                # A JSON string (MLflow's "CHAT_MODEL"): its escapes may spell out what the text hid.
                value = decoded if decoded is value else sanitizer.text(decoded)
            elif decoded is not value:
                value = sanitizer.nested(decoded, value, levels)
        node = tree
        if parents:
            if has_index:
                indexed = True
            for part in parents:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                    built.add(id(child))
                elif type(child) is not dict:  # a value that sub-keys go under: a JSON array, a scalar
                    child = node[part] = _merged(child, {}, built)
                    indexed = True
                node = child
        current = node.get(last)
        if current is None:
            node[last] = value
        else:
            node[last] = _merged(current, value, built)
            indexed = True
    if indexed:
        _listify_children(tree, built)
    return tree


def _listify_children(node: dict[str, Any], built: set[int]) -> None:
    """Built dicts keyed exactly "0".."n-1" -> lists, depth first, wherever they are below dicts (sub-keys merged
    into a JSON object's arrays make them there). Dicts only: a list holds no built dict, as sub-keys and merges
    turn every list they go into into a dict."""
    for key, value in node.items():
        if type(value) is dict:
            _listify_children(value, built)
            if id(value) in built:
                items = _indexed_list(value)
                if items is not None:
                    node[key] = items


def merge_at(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """`value` into a built tree at `path`, as attribute_tree puts the value of the key ".".join(path): merged
    with what is there (the mapping's `rename` moves values with it)."""
    built: set[int] = set()
    for part in reversed(path[1:]):
        value = {part: value}
        built.add(id(value))
    current = tree.get(path[0])
    holder = {path[0]: value if current is None else _merged(current, value, built)}
    _listify_children(holder, built)
    tree[path[0]] = holder[path[0]]


_SHORT_HEX_BYTES = 32


def short_hex(value: bytes) -> str:
    """An id as hex for a message, at most 32 bytes of it: a hostile id can be megabytes long."""
    if len(value) <= _SHORT_HEX_BYTES:
        return value.hex()
    return value[:_SHORT_HEX_BYTES].hex() + f"...({len(value)} bytes)"


# Second -> "YYYY-MM-DDTHH:MM:SS": the spans of a request share few distinct seconds, and formatting one
# through time.gmtime costs far more than a dict look-up. Cleared when full, so it stays small.
_SECONDS_TEXT: dict[int, str] = {}
_SECONDS_TEXT_MAX = 4096


def iso_time(unix_nano: int) -> str:
    """Nanoseconds since the epoch -> ISO 8601 UTC with microseconds, e.g. 2026-01-02T03:04:05.678901Z.

    Integer arithmetic only, so the same span always gives the same string (the upstream dedups a resent
    call only when `id` and `started_at` are both equal).
    """
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    text = _SECONDS_TEXT.get(seconds)
    if text is None:
        if len(_SECONDS_TEXT) >= _SECONDS_TEXT_MAX:
            _SECONDS_TEXT.clear()
        t = time.gmtime(seconds)
        text = _SECONDS_TEXT[seconds] = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
    return f"{text}.{nanos // 1000:06d}Z"


_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(obj: Any) -> None:
    # OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64.
    for key in _ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError:
                raise ValueError(f"{key} {value!r} is not hex") from None


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


M = TypeVar("M", bound=Message)


def _snake(key: str) -> str:
    return re.sub("([A-Z])", lambda m: "_" + m[1].lower(), key)


def parse_json_request(data: bytes | str, message_type: type[M], path: tuple[str, ...], what: str) -> M:
    """An OTLP/JSON request (hex ids, lowerCamelCase or snake_case keys; unknown fields ignored) -> protobuf.

    `path` is the lowerCamelCase keys down to the items that carry ids (spans, log records); ValueError
    says why the data is not such a request.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object with {path[0]}")
    # Only well-shaped parts are walked here; ParseDict reports anything else as a ValueError below.
    items = [doc]
    for key in path:
        items = [child for item in items for child in _objects(item.get(key) or item.get(_snake(key)))]
    for item in items:
        _hex_ids_to_base64(item)
        for link in _objects(item.get("links")):
            _hex_ids_to_base64(link)
    try:
        return json_format.ParseDict(doc, message_type(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ValueError(f"not an OTLP/JSON {what} request: {exc}") from None


def parse_otlp_json(data: bytes | str) -> ExportTraceServiceRequest:
    """An OTLP/JSON ExportTraceServiceRequest -> protobuf (see parse_json_request)."""
    return parse_json_request(data, ExportTraceServiceRequest, ("resourceSpans", "scopeSpans", "spans"), "trace")


def parse_request(data: bytes) -> list[ExportTraceServiceRequest]:
    """A file's bytes -> requests: OTLP/JSON (one object, or one per line as the Collector's file
    exporter writes them) or a binary protobuf ExportTraceServiceRequest."""
    stripped = data.lstrip()
    if stripped[:1] == b"{":
        lines = [line for line in stripped.splitlines() if line.strip()]
        try:
            return [parse_otlp_json(line) for line in lines]
        except ValueError:
            if len(lines) == 1:
                raise
            return [parse_otlp_json(stripped)]  # one pretty-printed object over several lines
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError, sometimes other errors, for garbage
        raise ValueError("neither OTLP/JSON nor a binary protobuf ExportTraceServiceRequest") from None
    return [request]
