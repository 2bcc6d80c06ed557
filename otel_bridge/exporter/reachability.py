"""Whether the upstream answers, as /readyz needs it: a sender layer that records every attempt.

An HTTP answer below 500 (success, or a refusal such as 401 or 429) means the upstream is reachable; a
connection error, a timeout or a 5xx means it is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from otel_bridge.errors import ExportError
from otel_bridge.exporter.sender import Sender
from otel_bridge.exporter.queue import Batch

__all__ = ["UpstreamHealth", "ReachabilitySender"]


class UpstreamHealth:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Counted as reachable at start, so a bridge is not unready before its first send.
        self.answered_at = clock()
        self.failing = False

    def answered(self) -> None:
        self.answered_at = self._clock()
        self.failing = False

    def unreachable(self) -> None:
        self.failing = True

    def seconds_since_answer(self) -> float:
        return self._clock() - self.answered_at

    def reachable_within(self, grace: float) -> bool:
        """True unless the last attempt failed and the last answer is older than `grace` seconds."""
        return not self.failing or self.seconds_since_answer() <= grace


class ReachabilitySender:
    def __init__(self, inner: Sender, upstream: UpstreamHealth) -> None:
        self.inner = inner
        self.upstream = upstream

    async def send(self, batch: Batch) -> None:
        try:
            await self.inner.send(batch)
        except ExportError as exc:
            if exc.status is not None and exc.status < 500:
                self.upstream.answered()
            else:
                self.upstream.unreachable()
            raise
        self.upstream.answered()

    async def close(self) -> None:
        await self.inner.close()
