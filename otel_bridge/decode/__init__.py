"""Decode: the bytes of an OTLP request -> plain data (decoded.py), with limits and redaction applied as it is
read. This package is the only place that knows the OTLP wire format; the mapping takes what it returns.

`decode_request(data, sanitizer)` is the one the bridge uses: `decode_request_native`, the C extension
`_decode` reading the wire bytes directly, when it is built, else `decode_request_python` (reference.py), the
reference it must match exactly. `NATIVE` says which one is in use. The Sanitizer (sanitize.py) holds the
request's limits and redaction, and afterwards the tally of what they changed.
"""

from __future__ import annotations

from otel_bridge.decode.decoded import ResourceSpans
from otel_bridge.decode.reference import count_spans_python, decode_request_python
from otel_bridge.decode.sanitize import Sanitizer

__all__ = [
    "NATIVE",
    "count_spans",
    "count_spans_python",
    "decode_request",
    "decode_request_native",
    "decode_request_python",
]

try:
    from otel_bridge.decode import _decode  # type: ignore[attr-defined]
except ImportError:
    _decode = None

NATIVE = _decode is not None


def decode_request_native(data: bytes, sanitizer: Sanitizer) -> list[ResourceSpans]:
    """The C decoder, handed the one interface it takes from the sanitizer (NativeInterface)."""
    return _decode.decode_request(data, sanitizer.native())


decode_request = decode_request_native if NATIVE else decode_request_python
count_spans = _decode.count_spans if _decode is not None else count_spans_python
