"""Why request bytes are refused, written once for both decoders.

The reference decoder gets the reason from the protobuf runtime (upb); the C decoder checks the same bytes
the same way and names the reason by its index in UPB_ERRORS (E_CORRUPT, E_DEPTH, E_UTF8 in _decode.c).
"""

from __future__ import annotations

from otel_bridge.errors import BadRequestError

__all__ = ["UPB_ERRORS", "refused"]

# upb's words for the three ways bytes fail, in the C decoder's order, and what each means for a sender.
UPB_ERRORS: tuple[tuple[str, str], ...] = (
    ("Wire format was corrupt", " (truncated, or not protobuf at all)"),
    ("Exceeded upb_DecodeOptions_MaxDepth", " (values nest deeper than the decoder's 100 message levels)"),
    ("String field had bad UTF-8", " (protobuf requires UTF-8 in strings; send binary data as bytes values)"),
)
_HINTS = dict(UPB_ERRORS)


def refused(size: int, detail: str) -> BadRequestError:
    """The error for `size` bytes that are not an ExportTraceServiceRequest, `detail` saying why."""
    return BadRequestError(
        f"request ({size} bytes) is not a protobuf ExportTraceServiceRequest: {detail}{_HINTS.get(detail, '')}"
    )
