"""Decode: the bytes of an OTLP request -> plain data (decoded.py), with limits and redaction applied as it is
read. This package is the only place that knows the OTLP wire format; the mapping takes what it returns.

`decode_request` is the one the bridge uses: the C extension `_decode` when it is built, which reads the wire
bytes directly, else `decode_request_python` (reference.py), the reference it must match exactly. `NATIVE`
says which one is in use.
"""

from otel_bridge.decode.reference import count_spans_python, decode_request_python

__all__ = ["NATIVE", "count_spans", "count_spans_python", "decode_request", "decode_request_python"]

try:
    from otel_bridge.decode import _decode  # type: ignore[attr-defined]
except ImportError:
    _decode = None

NATIVE = _decode is not None
decode_request = _decode.decode_request if _decode is not None else decode_request_python
count_spans = _decode.count_spans if _decode is not None else count_spans_python
