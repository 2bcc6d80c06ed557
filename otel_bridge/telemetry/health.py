"""What /healthz and /readyz answer.

    live   the process answers (a hung event loop answers nothing, and the probe times out)
    ready  every enabled receiver is listening, the queue is below its high-water mark
           (telemetry.readiness.queue_high_water), the upstream answered recently
           (telemetry.readiness.upstream_grace; 0 leaves it out), and the durable queue's files can be
           written (a damaged file set aside is reported, but the bridge goes on with a new one)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from otel_bridge.config import Readiness
from otel_bridge.exporter.reachability import UpstreamHealth

if TYPE_CHECKING:
    from otel_bridge.sqlite_file import FileState  # sqlite3 only where the queue is durable

__all__ = ["Health", "Listener"]


class Listener(Protocol):
    name: str
    listening: bool


class Health:
    def __init__(
        self,
        *,
        receivers: Sequence[Listener],
        queue_size: Callable[[], int],
        queue_capacity: int,
        upstream: UpstreamHealth,
        config: Readiness,
        files: Sequence[FileState] = (),
    ) -> None:
        self._receivers = receivers
        self._files = files
        self._queue_size = queue_size
        self._high_water = int(queue_capacity * config.queue_high_water)
        self._upstream = upstream
        self._grace = config.upstream_grace

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the state of each check): the body of /readyz says which check failed, and by how much."""
        size = self._queue_size()
        checks: dict[str, dict[str, Any]] = {
            "receivers": {
                "ok": all(r.listening for r in self._receivers),
                "listening": {r.name: r.listening for r in self._receivers},
            },
            "queue": {"ok": size <= self._high_water, "size_bytes": size, "high_water_bytes": self._high_water},
        }
        if self._grace:
            checks["upstream"] = {
                "ok": self._upstream.reachable_within(self._grace),
                "failing": self._upstream.failing,
                "seconds_since_answer": round(self._upstream.seconds_since_answer(), 3),
                "grace_seconds": self._grace,
            }
        if self._files:
            checks["files"] = {
                "ok": all(f.write_error is None for f in self._files),
                **{f.name: {"write_error": f.write_error, "set_aside": f.set_aside} for f in self._files},
            }
        return all(check["ok"] for check in checks.values()), checks
