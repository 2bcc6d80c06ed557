"""The calls-complete request body, `{"batch":[call,...]}`: built here and nowhere else.

Calls arrive as the mapping encoded them (JSON, one bytes object each) and are never re-parsed to build a
body: its size is known from theirs (body_size), which is what the queue batches by and split halves by,
and the body is their bytes joined, sent in pieces (body_chunks). Only a call too large for any body is
parsed again, by trim.py, to cut it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["body", "body_chunks", "body_size"]

_OPEN, _SEPARATOR, _CLOSE = b'{"batch":[', b",", b"]}"
_OVERHEAD = len(_OPEN) + len(_CLOSE)


def body_size(call_sizes: int, count: int) -> int:
    """Bytes of the body holding `count` calls of `call_sizes` bytes in all."""
    return _OVERHEAD + call_sizes + max(count - 1, 0) * len(_SEPARATOR)


def body(calls: Sequence[bytes]) -> bytes:
    return _OPEN + _SEPARATOR.join(calls) + _CLOSE


def body_chunks(calls: Sequence[bytes], chunk_bytes: int = 256 * 1024) -> Iterator[bytes]:
    """body(calls) in pieces of about chunk_bytes: a batch of LLM calls is megabytes, and a whole copy per
    send held up the bridge's memory (one per consumer, more until the garbage collector ran)."""
    piece: list[bytes] = [_OPEN]
    size = 0
    for i, call in enumerate(calls):
        if i:
            piece.append(_SEPARATOR)
        piece.append(call)
        size += len(call)
        if size >= chunk_bytes:
            yield b"".join(piece)
            piece, size = [], 0
    piece.append(_CLOSE)
    yield b"".join(piece)
