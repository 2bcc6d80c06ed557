"""POST batches to Weave's calls-complete endpoint."""

from __future__ import annotations

import base64
import email.utils
import logging
import re
import time
from collections.abc import AsyncIterator
from urllib.request import getproxies

import httpx
import orjson

from otel_bridge import __version__
from otel_bridge.config import mask_url
from otel_bridge.errors import (
    InvalidCallsError,
    PermanentError,
    ProjectBlockedError,
    RequestTooLargeError,
    RetryableError,
)
from otel_bridge.exporter.envelope import body_chunks, body_size
from otel_bridge.exporter.queue import Batch
from otel_bridge.project import project_path

__all__ = ["WeaveSender", "is_retryable", "parse_retry_after", "MAX_ANSWER_BYTES"]

log = logging.getLogger("otel_bridge.exporter")
# httpx logs every request's URL at INFO: noise at our batch rates, and a password in base_url with it. The
# sender logs what it does itself, with the URL masked.
logging.getLogger("httpx").setLevel(logging.WARNING)


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


# The most of an upstream answer that is read, and kept with an error (and in the dead-letter file): enough
# for FastAPI's per-call details, and a proxy's 1.5 GB error page costs no more than this.
MAX_ANSWER_BYTES = 64 * 1024

# Redirects that are followed (same origin only): the same POST goes to the new location. 303 ("see other",
# fetch it with GET) and the rest of 3xx are not an answer a POST endpoint gives; they are retried.
_FOLLOWED_REDIRECTS = frozenset((301, 302, 307, 308))

# "Authorization: Basic <token>" or "Bearer <token>" as an upstream may echo it back in an error body.
_ECHOED_AUTHORIZATION = re.compile(r"(?i)\b(basic|bearer)(\s+)[A-Za-z0-9+/=._~-]{8,}")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = httpx.URL(url)
    return parts.scheme, parts.host, parts.port


async def _read_prefix(response: httpx.Response) -> bytes:
    """At most MAX_ANSWER_BYTES of the body; the rest is never read (the connection is closed instead)."""
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept += chunk[: MAX_ANSWER_BYTES - len(kept)]
        if len(kept) >= MAX_ANSWER_BYTES:
            break
    return bytes(kept)


def _meets_tls(base_url: str) -> bool:
    """Whether a request to base_url can speak TLS: an https upstream, or an https proxy on the way (httpx
    reads the proxy variables). Redirects are followed within the origin only, so never to https."""
    if base_url.lower().startswith("https:"):
        return True
    return any(proxy.lower().startswith("https:") for proxy in getproxies().values())


class WeaveSender:
    """The transport: one POST per batch (following same-origin redirects). Turns every outcome into success
    or one of our errors."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        max_redirects: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.max_redirects = max_redirects
        token = base64.b64encode(f"api:{api_key}".encode()).decode()
        # What an upstream could echo back of our credentials; masked in every error (logs, dead-letter file).
        self._secrets = [secret for secret in (token, api_key) if secret]
        self._noted_redirects: set[tuple[str, str]] = set()
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth("api", api_key),
            timeout=None,  # the timeout layer bounds each attempt as a whole (exporter.weave.timeout)
            headers={"Content-Type": "application/json", "User-Agent": f"otel-bridge/{__version__}"},
            follow_redirects=False,  # send() follows same-origin ones itself: the credentials stay at home
            # The CA bundle costs 3 MiB of RSS to load; a plain-http upstream (a local one) never uses it.
            verify=_meets_tls(base_url),
            transport=transport,
        )

    def url(self, project: str) -> str:
        return f"{self.base_url}/v2/{project_path(project)}/calls/complete"

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[MASKED]")
        return _ECHOED_AUTHORIZATION.sub(r"\1\2[MASKED]", text)

    async def _post(self, url: str, batch: Batch) -> tuple[httpx.Response, str]:
        """One POST: the response (body unread past its prefix) and the prefix as text, secrets masked."""
        try:
            async with self._client.stream(
                "POST",
                url,
                content=_stream(batch),
                # With the length given, httpx sends the pieces as one body, not chunked transfer encoding.
                headers={"Content-Length": str(body_size(batch.nbytes, len(batch.calls)))},
            ) as response:
                prefix = await _read_prefix(response)
        except httpx.TransportError as exc:
            raise RetryableError(f"POST {mask_url(url)} failed: {self._mask(repr(exc))}") from None
        return response, self._mask(prefix.decode("utf-8", "replace"))

    def _redirect_target(self, url: str, response: httpx.Response) -> str:
        """Where a 3xx answer sends the POST, if it is followed; raises RetryableError when it is not."""
        status = response.status_code
        location = response.headers.get("Location")
        target = str(httpx.URL(url).join(location)) if location else None
        shown = f"POST {mask_url(url)} answered {status}" + (f" redirecting to {mask_url(target)}" if target else "")
        if status not in _FOLLOWED_REDIRECTS or target is None:
            raise RetryableError(f"{shown}: not a redirect a POST can follow; retrying (check exporter.weave.base_url)", status=status)
        if _origin(target) != _origin(url):
            raise RetryableError(
                f"{shown}: not followed, another origin would receive the API key; retrying. Set exporter.weave.base_url "
                "to the new address if it is the trace server",
                status=status,
            )
        if (url, target) not in self._noted_redirects:
            self._noted_redirects.add((url, target))
            log.warning("%s; following it (same origin); set exporter.weave.base_url to save the detour", shown)
        return target

    async def send(self, batch: Batch) -> None:
        url = self.url(batch.project)
        for _ in range(self.max_redirects + 1):
            response, answer = await self._post(url, batch)
            if not 300 <= response.status_code < 400:
                break
            url = self._redirect_target(url, response)
        else:
            raise RetryableError(
                f"POST {mask_url(self.url(batch.project))} was redirected more than {self.max_redirects} times "
                "(exporter.weave.max_redirects); retrying",
                status=response.status_code,
            )
        status = response.status_code
        if status < 300:
            self._check_answer(url, response, answer)
            return
        message = f"POST {mask_url(url)} answered {status}: {answer[:500]}"
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

    @staticmethod
    def _check_answer(url: str, response: httpx.Response, answer: str) -> None:
        """A success is a JSON answer (CallsUpsertCompleteRes). Anything else came from something in between, a
        captive portal or a misconfigured proxy, and the calls did not arrive: a failure, retried, never counted
        as delivered. Its status is left out, so /readyz counts the upstream as not answering."""
        try:
            orjson.loads(answer)
        except orjson.JSONDecodeError:
            kind = response.headers.get("Content-Type") or "no Content-Type"
            raise RetryableError(
                f"POST {mask_url(url)} answered {response.status_code} with a body that is not JSON ({kind}: "
                f"{answer[:200]!r}): not the trace server's answer, a proxy in between? The calls are kept and retried",
                answer=answer,
            ) from None

    async def close(self) -> None:
        await self._client.aclose()
