"""Issue 12 items 1-4: what one client can do to the receivers (and the probes on the same loop), tried as an
attacker would, on 127.0.0.1: bounded in time and memory so the suite stays fast."""

from __future__ import annotations

import gzip
import socket
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


# --- item 2: work per request bounded, and off the event loop ---------------------------------------------


def _bare_spans(n: int, attributes: int = 0):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    attrs = [KeyValue(key=f"app.key{j}", value=AnyValue(int_value=j)) for j in range(attributes)]
    return request(
        *(
            Span(trace_id=b"\x01" * 16, span_id=i.to_bytes(8, "big"), start_time_unix_nano=1, end_time_unix_nano=2, attributes=attrs)
            for i in range(1, n + 1)
        ),
        resource={"wandb.entity": "e", "wandb.project": "p"},
    ).SerializeToString()


def test_a_small_body_of_many_spans_is_refused_at_once_while_probes_are_answered(upstream, start_bridge):
    """100k bare spans gzip to 0.4 MB but map to 100 MB of calls: refused by their count, never mapped."""
    bridge = start_bridge(bridge_settings(upstream))
    body = gzip.compress(_bare_spans(100_000))
    with ProbeWatcher(bridge.telemetry_url) as probes:
        answer = httpx.post(
            f"{bridge.http_url}/v1/traces",
            content=body,
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
            timeout=30,
        )
    assert answer.status_code == 413
    assert b"needs 100000000 bytes of queue" in answer.content
    assert probes.slowest < 1.0


def test_mapping_a_large_request_leaves_the_loop_free_for_probes_and_other_clients(upstream, start_bridge):
    """30k spans x 20 attributes map for seconds; meanwhile /healthz and a small Export are answered."""
    bridge = start_bridge(bridge_settings(upstream, exporter={"queue": {"max_bytes": 128 * 1024 * 1024}}))
    large = _bare_spans(30_000, attributes=20)
    answers: list[int] = []
    sender = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{bridge.http_url}/v1/traces", content=large, headers={"Content-Type": "application/x-protobuf"}, timeout=60).status_code
        )
    )
    with ProbeWatcher(bridge.telemetry_url) as probes:
        sender.start()
        time.sleep(0.3)  # the large request is mapping
        started = time.perf_counter()
        small = httpx.post(
            f"{bridge.http_url}/v1/traces", content=b"\x01", headers={"Content-Type": "application/x-protobuf"}, timeout=30
        )
        refused_in = time.perf_counter() - started
        sender.join(60)
    assert answers == [200]
    assert small.status_code == 400  # garbage: refused while the large one maps, not after it
    assert refused_in < 1.0, refused_in
    assert probes.slowest < 0.5, probes.slowest
    upstream.wait_for_calls(30_000, timeout=30)


# --- item 3: connections are timed out --------------------------------------------------------------------


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Keeps sending `trickle` every 0.2 s; (True, what it answered) once the bridge closes the connection."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    received = b""
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(trickle)
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, received
    return False, received


def test_slow_and_idle_http_connections_are_closed(upstream, start_bridge):
    """A slowloris head, an idle connection and a half-sent body, each on a raw socket."""
    bridge = start_bridge(bridge_settings(upstream, receiver={"http": {"idle_timeout": "1s", "read_timeout": "1s"}}))
    port = bridge.bridge.http.port
    with socket.create_connection(("127.0.0.1", port)) as slowloris:
        slowloris.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        closed, _ = _closed_within(slowloris, 10, trickle=b"X-a: b\r\n")
        assert closed
    with socket.create_connection(("127.0.0.1", port)) as idle:
        assert _closed_within(idle, 10)[0]
    with socket.create_connection(("127.0.0.1", port)) as half:
        half.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\nab")
        closed, answer = _closed_within(half, 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"receiver.http.read_timeout" in answer
    with ProbeWatcher(bridge.telemetry_url) as probes:
        time.sleep(0.1)
    assert probes.answers > 0


def test_grpc_connections_that_never_handshake_are_closed(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream, receiver={"grpc": {"handshake_timeout": "1s"}}))
    with socket.create_connection(("127.0.0.1", bridge.bridge.grpc.port)) as silent:
        assert _closed_within(silent, 10)[0]



# --- item 4: unauthenticated health Watch streams are bounded ---------------------------------------------


def test_health_watch_streams_are_bounded_and_check_still_answers(upstream, start_bridge):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    bridge = start_bridge(
        bridge_settings(upstream, receiver={"grpc": {"max_health_watches": 3, "auth": {"bearer_token": "t0ken"}}})
    )
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        streams = [stub.Watch(health_pb2.HealthCheckRequest()) for _ in range(3)]
        for stream in streams:
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        refused = stub.Watch(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.RpcError) as error:
            next(refused)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "receiver.grpc.max_health_watches" in error.value.details()
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        streams[0].cancel()
        deadline = time.monotonic() + 10
        while True:  # the cancelled stream's slot comes back
            again = stub.Watch(health_pb2.HealthCheckRequest())
            try:
                assert next(again).status == health_pb2.HealthCheckResponse.SERVING
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        again.cancel()
        for stream in streams[1:]:
            stream.cancel()
