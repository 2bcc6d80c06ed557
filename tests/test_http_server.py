"""The HTTP/1.1 server under both HTTP endpoints (otel_bridge/http_server.py), spoken to on raw sockets:
what real clients do (100-continue, chunked bodies, pipelining, keep-alive, HEAD) and what broken ones do."""

from __future__ import annotations

import socket
import threading
import time

import httpx
from conftest import bridge_settings
from spans import request, span

ROUTED = {"wandb.entity": "e", "wandb.project": "p"}


def _body(name: str) -> bytes:
    return request(span(name), resource=ROUTED).SerializeToString()


def _head(body: bytes, *extra: str, path: str = "/v1/traces") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/x-protobuf", *extra]
    if not any(line.lower().startswith("transfer-encoding") for line in extra):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answers(sock: socket.socket, count: int, seconds: float = 10) -> list[bytes]:
    """`count` whole answers (head and Content-Length body), or fewer when the connection closes first."""
    sock.settimeout(seconds)
    buffer = b""
    answers: list[bytes] = []
    while len(answers) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(buffer) >= end:
                answers.append(buffer[:end])
                buffer = buffer[end:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return answers


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _closed(sock: socket.socket, seconds: float = 5) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_expect_100_continue_is_answered_before_the_body_is_sent(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    body = _body("continued")
    with socket.create_connection(("127.0.0.1", bridge.bridge.http.port)) as sock:
        sock.sendall(_head(body, "Expect: 100-continue"))
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        (answer,) = _read_answers(sock, 1)
    assert _status(answer) == 200
    assert [c["op_name"] for c in upstream.wait_for_calls(1)] == ["continued"]


def test_chunked_body_pipelined_requests_and_keep_alive(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    first, second, third = _body("first"), _body("second"), _body("third")
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (second[:5], second[5:])) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", bridge.bridge.http.port)) as sock:
        # Three requests in one write: answered in order on the same connection, which stays open.
        sock.sendall(_head(first) + first + _head(b"", "Transfer-Encoding: chunked") + chunked + _head(third) + third)
        answers = _read_answers(sock, 3)
        assert [_status(a) for a in answers] == [200, 200, 200]
        assert all(b"\r\nserver: otel-bridge\r\n" in a.lower() and b"\r\ndate: " in a.lower() for a in answers)
        sock.sendall(_head(b"") + b"")  # and a fourth, later, on the same connection
        assert [_status(a) for a in _read_answers(sock, 1)] == [200]
    assert sorted(c["op_name"] for c in upstream.wait_for_calls(3)) == ["first", "second", "third"]


def test_malformed_requests_are_answered_with_their_reason_and_the_server_keeps_serving(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    port = bridge.bridge.http.port
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400),
        (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ]
    for raw, status in cases:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(raw)
            (answer,) = _read_answers(sock, 1)
            assert _status(answer) == status, answer[:200]
            assert _closed(sock)
    answer = httpx.post(f"{bridge.http_url}/v1/traces", content=_body("after"), headers={"Content-Type": "application/x-protobuf"})
    assert answer.status_code == 200


def test_a_request_answered_before_its_body_is_read_closes_the_connection(upstream, start_bridge):
    settings = bridge_settings(upstream, receiver={"http": {"max_request_body_size_mib": 1}})
    bridge = start_bridge(settings)
    with socket.create_connection(("127.0.0.1", bridge.bridge.http.port)) as sock:
        # The rest of a refused body must not be read as the next request.
        sock.sendall(_head(b"x" * (2 * 1024 * 1024)) + b"POST /v1/traces HTTP/1.1\r\n")
        (answer,) = _read_answers(sock, 1)
        assert _status(answer) == 413
        assert b"\r\nconnection: close\r\n" in answer.lower()
        assert _closed(sock)


def test_telemetry_answers_head_and_refuses_other_methods_and_paths(start_bridge):
    bridge = start_bridge(bridge_settings())
    head = httpx.head(bridge.telemetry_url + "/healthz")
    assert head.status_code == 200 and head.content == b""
    post = httpx.post(bridge.telemetry_url + "/healthz")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    assert httpx.get(bridge.telemetry_url + "/nowhere").status_code == 404


def test_stop_finishes_the_request_in_hand_and_closes_idle_connections(upstream, start_bridge):
    bridge = start_bridge(bridge_settings(upstream))
    body = _body("in hand")
    with socket.create_connection(("127.0.0.1", bridge.bridge.http.port)) as idle, socket.create_connection(
        ("127.0.0.1", bridge.bridge.http.port)
    ) as busy:
        busy.sendall(_head(body) + body[:3])  # the head is in: a request in hand, its body still coming
        time.sleep(0.2)
        stopping = bridge.begin_stop()
        assert _closed(idle)
        busy.sendall(body[3:])
        (answer,) = _read_answers(busy, 1)
        assert _status(answer) == 200 and b"\r\nconnection: close\r\n" in answer.lower()
        stopping.result(30)
    assert [c["op_name"] for c in upstream.calls] == ["in hand"]


def _connect_with_small_buffers(sock: socket.socket, server):
    """Connect `sock` to `server` with small kernel buffers on both sides, so answers the client does not
    read pile up where the test can see them; returns the server's side of the connection."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    deadline = time.monotonic() + 5
    while not server.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    (connection,) = server.connections
    connection._transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return connection


def test_a_client_that_pipelines_requests_and_reads_no_answers_is_held_back(start_bridge):
    """Answers pile up in the server only to the transport's high-water mark: the server stops reading the
    client's next requests until the client reads, and then answers every one of them."""
    bridge = start_bridge(bridge_settings())
    server = bridge.bridge.telemetry
    count = 20_000
    requests = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" * count  # ~150-byte answers: 3 MB of them
    with socket.socket() as sock:
        connection = _connect_with_small_buffers(sock, server)
        sender = threading.Thread(target=sock.sendall, args=(requests,), daemon=True)
        sender.start()
        time.sleep(1.0)  # the server answers until the client's receive buffer, then its own, is full
        buffered = connection._transport.get_write_buffer_size()
        assert buffered <= 256 * 1024, f"{buffered} bytes of answers buffered in the server"
        answers = _read_answers(sock, count, seconds=30)
        sender.join(10)
    assert len(answers) == count and {_status(answer) for answer in answers} == {404}


def test_a_client_that_never_reads_its_answers_loses_its_connection_after_the_idle_timeout(start_bridge):
    bridge = start_bridge(bridge_settings(receiver={"http": {"endpoint": "127.0.0.1:0", "idle_timeout": "500ms"}}))
    server = bridge.bridge.http
    with socket.socket() as sock:
        _connect_with_small_buffers(sock, server)

        def send() -> None:
            try:
                sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" * 20_000)
            except OSError:
                pass  # reset once the server gives up on us

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + 10
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.connections, "a connection whose answers are never read is kept"
