"""Hypothesis strategies for arbitrary OTLP trace requests: any AnyValue trees, ids, times, unicode, huge and
empty values, JSON text, dotted and indexed keys, odd numbers. Shared by tests/test_fuzz.py and bench/fuzz.py."""

from __future__ import annotations

import json
import math

from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.one_of(st.just(0), st.integers(0, 2**64 - 1), st.integers(1_700_000_000 * 10**9, 1_900_000_000 * 10**9))
UINT32 = st.integers(0, 2**32 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)

# Text that matters to the mapping: unicode, JSON-looking, numbers, the keys the rule tables read.
_KNOWN_KEYS = [
    "gen_ai.prompt", "gen_ai.completion", "input.value", "output.value", "gen_ai.input.messages",
    "gen_ai.output.messages", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens", "llm.token_count.prompt", "gen_ai.conversation.id", "wandb.is_turn",
    "wandb.display_name", "wandb.attributes", "wandb.wb_run_id", "wandb.wb_run_step", "langfuse.startTime",
    "langfuse.endTime", "error.type", "input", "output", "gen_ai.prompt.0.content", "gen_ai.prompt.1.role",
    "exception.type", "exception.message", "wandb.entity", "wandb.project", "x", "x.y", "x.0", "0", "",
]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "{", "[", "[]", "{}", "null", "nan", "1e400", "-0", "2026-01-01T00:00:00Z", "true", "\u2028", "\x00"]),
    _json_values.map(json.dumps),
    st.integers(1, 300).map(lambda n: "[" * n + "]" * n),  # deep JSON
    st.integers(1, 5000).map(lambda n: "x" * n),  # long
)
KEY = st.one_of(st.sampled_from(_KNOWN_KEYS), st.text(max_size=20), st.lists(st.sampled_from(["a", "0", "1", "b", ""]), min_size=1, max_size=40).map(".".join))


def _scalar() -> st.SearchStrategy[AnyValue]:
    return st.one_of(
        TEXT.map(lambda s: AnyValue(string_value=s)),
        INT64.map(lambda i: AnyValue(int_value=i)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0])).map(lambda f: AnyValue(double_value=f)),
        st.binary(max_size=40).map(lambda b: AnyValue(bytes_value=b)),
        st.just(AnyValue()),
    )


ANY_VALUE = st.recursive(
    _scalar(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
        st.lists(st.tuples(KEY, inner), max_size=4).map(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs]))
        ),
    ),
    max_leaves=10,
)
ATTRIBUTES = st.lists(st.builds(KeyValue, key=KEY, value=ANY_VALUE), max_size=8)

@st.composite
def _id(draw: st.DrawFn, length: int, *, empty_ok: bool = False) -> bytes:
    """Mostly valid ids (so most spans get mapped), sometimes all zeros, empty or of a wrong length."""
    kind = draw(st.integers(0, 9))  # low numbers come first and shrink best: the valid ids
    if kind <= 6:
        return draw(st.integers(1, 2 ** (8 * length) - 1)).to_bytes(length, "big")
    if kind == 7:
        return b"\x00" * length
    if kind == 8 and empty_ok:
        return b""
    return draw(st.binary(max_size=40).filter(lambda b: len(b) != length))


_TIME = st.one_of(st.integers(1, 2**64 - 1), st.integers(1_700_000_000 * 10**9, 1_900_000_000 * 10**9))
SPAN_TIME = st.integers(0, 9).flatmap(lambda kind: st.just(0) if kind == 9 else _TIME)


EVENT = st.builds(
    Span.Event, time_unix_nano=UINT64, name=TEXT, attributes=ATTRIBUTES, dropped_attributes_count=UINT32
)
LINK = st.builds(
    Span.Link,
    trace_id=_id(16),
    span_id=_id(8),
    trace_state=TEXT,
    attributes=ATTRIBUTES,
    dropped_attributes_count=UINT32,
    flags=UINT32,
)
SPAN = st.builds(
    Span,
    trace_id=_id(16),
    span_id=_id(8),
    parent_span_id=_id(8, empty_ok=True),
    trace_state=TEXT,
    name=TEXT,
    kind=st.one_of(st.integers(0, 5), INT32),
    start_time_unix_nano=SPAN_TIME,
    end_time_unix_nano=SPAN_TIME,
    attributes=ATTRIBUTES,
    dropped_attributes_count=UINT32,
    events=st.lists(EVENT, max_size=3),
    dropped_events_count=UINT32,
    links=st.lists(LINK, max_size=2),
    dropped_links_count=UINT32,
    status=st.builds(Status, code=st.one_of(st.integers(0, 2), INT32), message=TEXT),
    flags=UINT32,
)
_PROJECT_RESOURCE = [
    KeyValue(key="wandb.entity", value=AnyValue(string_value="fuzz")),
    KeyValue(key="wandb.project", value=AnyValue(string_value="project")),
]
RESOURCE = st.one_of(
    ATTRIBUTES.map(lambda kvs: Resource(attributes=_PROJECT_RESOURCE + kvs)),  # routed: the spans are mapped
    ATTRIBUTES.map(lambda kvs: Resource(attributes=kvs)),  # routed by the default project, or wrongly named
)
SCOPE = st.builds(InstrumentationScope, name=TEXT, version=TEXT, attributes=ATTRIBUTES)
REQUEST = st.builds(
    ExportTraceServiceRequest,
    resource_spans=st.lists(
        st.builds(
            ResourceSpans,
            resource=RESOURCE,
            scope_spans=st.lists(st.builds(ScopeSpans, scope=SCOPE, spans=st.lists(SPAN, max_size=4)), max_size=2),
        ),
        max_size=2,
    ),
)


def mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Valid request bytes with bytes flipped, inserted, deleted or the tail cut."""
    if not data:
        return st.binary(max_size=64)
    positions = st.integers(0, len(data) - 1)
    return st.one_of(
        st.tuples(positions, st.integers(0, 255)).map(lambda p: data[: p[0]] + bytes([p[1]]) + data[p[0] + 1 :]),
        st.tuples(positions, st.binary(min_size=1, max_size=8)).map(lambda p: data[: p[0]] + p[1] + data[p[0] :]),
        st.tuples(positions, st.integers(1, 16)).map(lambda p: data[: p[0]] + data[p[0] + p[1] :]),
        positions.map(lambda p: data[:p]),
    )
