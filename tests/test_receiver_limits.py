"""Issue 12 items 1-4: what one client can do to the receivers (and the probes on the same loop), tried as an
attacker would, on 127.0.0.1: bounded in time and memory so the suite stays fast."""

from __future__ import annotations

import gzip
import threading
import time
import zlib

import httpx
import pytest
from conftest import bridge_settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from spans import request, span

from otel_bridge.receiver.inflate import InflateError, TooLargeError, inflate

GZIP = 16 + zlib.MAX_WBITS


class ProbeWatcher:
    """GETs /healthz in a loop from a thread and keeps the slowest answer, while the test attacks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get(f"{self.url}/healthz").status_code == 200
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.answers += 1
                time.sleep(0.02)

    def __enter__(self) -> ProbeWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)


# --- item 1: gzip member bomb ---------------------------------------------------------------------------


def test_inflate_reads_every_member_and_refuses_what_is_broken():
    members = gzip.compress(b"ab") + gzip.compress(b"") + gzip.compress(b"cd" * 100_000)
    assert inflate(members, GZIP, 1_000_000) == b"ab" + b"cd" * 100_000
    assert inflate(zlib.compress(b"x" * 5000), zlib.MAX_WBITS, 5000) == b"x" * 5000
    with pytest.raises(TooLargeError):
        inflate(zlib.compress(b"x" * 5001), zlib.MAX_WBITS, 5000)
    with pytest.raises(TooLargeError):  # the limit counts every member together
        inflate(gzip.compress(b"x" * 3000) * 2, GZIP, 5000)
    with pytest.raises(InflateError, match="truncated"):
        inflate(members[:-3], GZIP, 1_000_000)
    with pytest.raises(InflateError, match="does not decompress"):
        inflate(members + b"garbage!", GZIP, 1_000_000)


def test_a_gzip_member_bomb_is_inflated_in_linear_time_while_probes_are_answered(upstream, start_bridge):
    """240k empty members (4.8 MB): the old decoder re-copied the rest per member, 60 s with the loop frozen."""
    bridge = start_bridge(bridge_settings(upstream))
    bomb = gzip.compress(b"") * 240_000
    with ProbeWatcher(bridge.telemetry_url) as probes:
        started = time.perf_counter()
        answer = httpx.post(
            f"{bridge.http_url}/v1/traces",
            content=bomb,
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
            timeout=30,
        )
        took = time.perf_counter() - started
    assert answer.status_code == 200, answer.text  # an empty request, as many times as it was sent
    assert ExportTraceServiceResponse.FromString(answer.content).partial_success.rejected_spans == 0
    assert took < 20
    assert probes.answers > 0 and probes.slowest < 2.0
    # And the receiver still works.
    data = request(span(), resource={"wandb.entity": "e", "wandb.project": "p"}).SerializeToString()
    answer = httpx.post(
        f"{bridge.http_url}/v1/traces",
        content=gzip.compress(data),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 200
    upstream.wait_for_calls(1)
