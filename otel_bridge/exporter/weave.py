"""POST batches to Weave's calls-complete endpoint."""

from __future__ import annotations

import email.utils
import time

import httpx

from otel_bridge import __version__
from otel_bridge.errors import PermanentError, RetryableError
from otel_bridge.queue import Batch

__all__ = ["WeaveSender", "RETRYABLE_STATUS", "parse_retry_after"]

# Retryable: the same request may succeed later. Everything else in 4xx is the request's own fault.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 300.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (delay-seconds or HTTP-date) -> seconds to wait, clamped to [0, 300]."""
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


class WeaveSender:
    def __init__(self, *, base_url: str, api_key: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth("api", api_key),
            timeout=timeout,
            headers={"Content-Type": "application/json", "User-Agent": f"otel-bridge/{__version__}"},
            transport=transport,
        )

    def url(self, project: str) -> str:
        return f"{self.base_url}/v2/{project}/calls/complete"

    async def send(self, batch: Batch) -> None:
        url = self.url(batch.project)
        try:
            response = await self._client.post(url, content=batch.body())
        except httpx.TimeoutException as exc:
            raise RetryableError(f"POST {url} timed out: {exc!r}") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"POST {url} failed: {exc!r}") from None
        status = response.status_code
        if status < 300:
            return
        detail = response.text[:500]
        message = f"POST {url} answered {status}: {detail}"
        if status in RETRYABLE_STATUS:
            raise RetryableError(message, status=status, retry_after=parse_retry_after(response.headers.get("Retry-After")))
        if status in (401, 403):
            message += " (check exporter.weave.api_key / WANDB_API_KEY and access to the project)"
        raise PermanentError(message, status=status)

    async def close(self) -> None:
        await self._client.aclose()
