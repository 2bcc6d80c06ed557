"""POST batches to Weave's calls-complete endpoint."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator

import httpx

from otel_bridge import __version__
from otel_bridge.errors import (
    InvalidCallsError,
    PermanentError,
    ProjectBlockedError,
    RequestTooLargeError,
    RetryableError,
)
from otel_bridge.exporter.envelope import body_chunks, body_size
from otel_bridge.exporter.queue import Batch

__all__ = ["WeaveSender", "is_retryable", "parse_retry_after"]


def is_retryable(status: int) -> bool:
    """The same request may succeed later: timeouts, throttling and server errors. The rest of 4xx is
    the request's own fault."""
    return status in (408, 429) or 500 <= status <= 599

_MAX_RETRY_AFTER = 300.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (delay-seconds or HTTP-date) -> seconds to wait, clamped to [0, 300].

    The clamp keeps one odd header from parking a batch for hours; a server that still wants more time
    answers 429/503 again, and the wait starts over.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, min(moment.timestamp() - now, _MAX_RETRY_AFTER))


async def _stream(batch: Batch) -> AsyncIterator[bytes]:
    for chunk in body_chunks(batch.calls):
        yield chunk


# The upstream's answer kept with an error (and in the dead-letter file): enough for FastAPI's per-call details.
_MAX_ANSWER = 64 * 1024


class WeaveSender:
    """The transport: one POST per batch. Turns every outcome into success or one of our errors."""

    def __init__(self, *, base_url: str, api_key: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth("api", api_key),
            timeout=None,  # the timeout layer bounds each attempt as a whole (exporter.weave.timeout)
            headers={"Content-Type": "application/json", "User-Agent": f"otel-bridge/{__version__}"},
            transport=transport,
        )

    def url(self, project: str) -> str:
        return f"{self.base_url}/v2/{project}/calls/complete"

    async def send(self, batch: Batch) -> None:
        url = self.url(batch.project)
        try:
            response = await self._client.post(
                url,
                content=_stream(batch),
                # With the length given, httpx sends the pieces as one body, not chunked transfer encoding.
                headers={"Content-Length": str(body_size(batch.nbytes, len(batch.calls)))},
            )
        except httpx.TransportError as exc:
            raise RetryableError(f"POST {url} failed: {exc!r}") from None
        status = response.status_code
        if status < 300:
            return
        answer = response.text[:_MAX_ANSWER]
        message = f"POST {url} answered {status}: {answer[:500]}"
        if is_retryable(status):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RetryableError(message, status=status, answer=answer, retry_after=retry_after)
        if status in (401, 403):
            raise ProjectBlockedError(
                f"{message} (check exporter.weave.api_key / WANDB_API_KEY, and that the key may write to {batch.project})",
                status=status,
                answer=answer,
            )
        if status == 413:
            raise RequestTooLargeError(message, status=status, answer=answer)
        if status == 422:
            raise InvalidCallsError(message, status=status, answer=answer)
        raise PermanentError(message, status=status, answer=answer)

    async def close(self) -> None:
        await self._client.aclose()
