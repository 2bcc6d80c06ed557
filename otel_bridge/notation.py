"""How the bridge writes durations and endpoints: parsed from the config, written back into its messages.

Durations are Go-style, as in the Collector's config ("500ms", "1m30s"); endpoints are host:port.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["format_duration", "parse_duration", "split_endpoint"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """A Go-style duration ("500ms", "1m30s") or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 1s or 5m")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 500ms, 1s or 5m")
    text = value.strip()
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {value!r}: expected a number with a unit (ns, us, ms, s, m, h), e.g. 500ms, 1s, 1m30s")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port` -> (host, port); `[::]:4318` -> ("::", 4318)."""
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)
