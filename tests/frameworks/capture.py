"""OtlpCapture: a real OTLP/HTTP receiver on 127.0.0.1 that keeps every request body, in arrival order.

Standard library only. Accepts /v1/traces, /v1/logs and /v1/metrics in protobuf or JSON, gzip or not,
and answers each with an empty (full-success) export response in the request's encoding.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# /otel/v1/traces: Weave's own OTLP path, where exporters set up for Weave post (LiteLLM's Weave callback).
SIGNALS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics", "/otel/v1/traces": "traces"}


@dataclass(frozen=True)
class Captured:
    signal: str  # traces, logs or metrics
    json: bool  # the body is OTLP/JSON (else protobuf)
    body: bytes  # decompressed


class OtlpCapture:
    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.capture = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-capture", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OtlpCapture:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, captured: Captured) -> None:
        with self._lock:
            self.requests.append(captured)

    def settle(self, quiet: float = 1.0, timeout: float = 30.0) -> None:
        """Wait until no request has arrived for `quiet` seconds (exporters may flush late), at most `timeout`."""
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = len(self.requests)
            if count != seen:
                seen, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:
        signal = SIGNALS.get(self.path.split("?")[0])
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if signal is None:
            self._answer(404, b"unknown OTLP path", "text/plain")
            return
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        is_json = (self.headers.get("Content-Type") or "").startswith("application/json")
        self.server.capture.add(Captured(signal, is_json, body))  # type: ignore[attr-defined]
        if is_json:
            self._answer(200, b"{}", "application/json")
        else:
            self._answer(200, b"", "application/x-protobuf")

    def _answer(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
