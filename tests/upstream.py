"""A stand-in for the Weave trace server's calls-complete endpoint, for tests.

``UpstreamServer`` is a real HTTP/1.1 server on 127.0.0.1 (free port) running in
a background thread. It accepts only ``POST /v2/{entity}/{project}/calls/complete``
with HTTP Basic auth (user ``api``, password = the API key), validates every body
against ``proto/calls-complete.schema.json`` and records what it accepted.

Anything the real server would reject as malformed (wrong route, bad gzip, bad
JSON, schema violation, project_id not matching the path) is answered like
FastAPI would (404/405/400/422 with ``{"detail": ...}``) AND appended to
``errors``, so a test ends with ``server.assert_no_errors()`` and fails loudly if
the bridge ever sent something invalid. A 401 is not an error: a wrong key is
configuration, and tests of the bridge's auth handling provoke it on purpose.
Scripted faults (``fail_next``, ``set_down``, ``reject_ids``, ``max_body_bytes``,
``delay``; ``fail_next`` may also stream a huge body or echo the request's headers, as a
misbehaving proxy does) are not errors either; every attempt, answered or not, is in ``attempts``.

Order in which a request is handled, mirroring a proxy in front of an app:
down -> read body -> delay -> fail_next -> route -> max_body_bytes -> auth ->
decode/validate -> reject_ids -> accept.
"""

from __future__ import annotations

import base64
import binascii
import collections
import gzip
import json
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "proto" / "calls-complete.schema.json"
ROUTE = re.compile(r"^/v2/(?P<entity>[^/]+)/(?P<project>[^/]+)/calls/complete$")
AUTH_USER = "api"


@dataclass
class RecordedRequest:
    """One accepted request."""

    path: str
    project: str  # "entity/project" from the path
    headers: dict[str, str]  # header names lowercased
    body: dict[str, Any]  # the decoded JSON body
    raw_size: int  # bytes on the wire (compressed size when gzipped)


@dataclass
class Attempt:
    """One request as it arrived, whatever happened to it."""

    at: float  # time.monotonic() when the request line arrived
    method: str
    path: str
    status: int | None  # None: connection dropped without an answer (server down)
    reason: str  # "accepted", "fail_next", "down", "rejected_ids", "invalid", ...
    call_ids: list[str] = field(default_factory=list)  # best effort, from the body


@dataclass
class _ScriptedAnswer:
    status: int
    headers: dict[str, str]
    body: Any
    filler_bytes: int = 0  # this many more bytes of body after `body`, streamed
    echo_headers: bool = False  # the body is the request's headers (Authorization included)


class _Answer(Exception):
    """Raised inside the handler to send an HTTP answer and stop processing."""

    def __init__(self, status: int, body: Any, reason: str, headers: dict[str, str] | None = None,
                 filler_bytes: int = 0):
        super().__init__(reason)
        self.status = status
        self.body = body
        self.reason = reason
        self.headers = headers or {}
        self.filler_bytes = filler_bytes


def _detail(loc: list, msg: str, type_: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": type_}


class UpstreamServer:
    """Fake Weave trace server. Use as a context manager or with start()/stop().

    Settable attributes (read on every request, so tests may change them any time):
      max_body_bytes: bodies with more wire bytes get 413 (None: no limit).
      delay: seconds to sleep after reading a request, before answering.
      retry_after: Retry-After header value added to fail_next answers of 429/503.
    """

    def __init__(
        self, api_key: str = "test-api-key", schema_path: Path | str = SCHEMA_PATH, ssl_context: Any = None
    ):
        self.api_key = api_key
        self._ssl_context = ssl_context  # an ssl.SSLContext: serve https
        self.max_body_bytes: int | None = None
        self.delay: float = 0.0
        self.retry_after: str | None = None

        schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        format_checker = Draft202012Validator.FORMAT_CHECKER
        # jsonschema silently skips formats it has no checker for; a sink that
        # never checks date-time would let bad timestamps through unnoticed.
        if "date-time" not in format_checker.checkers:
            raise RuntimeError("date-time format checking needs: pip install rfc3339-validator")
        self._validator = Draft202012Validator(schema, format_checker=format_checker)

        # One condition guards all mutable state below; wait_for_calls waits on it.
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._calls: list[dict[str, Any]] = []
        self._id_counts: collections.Counter[str] = collections.Counter()
        self._errors: list[str] = []
        self._attempts: list[Attempt] = []
        self._scripted: collections.deque[_ScriptedAnswer] = collections.deque()
        self._rejected_ids: frozenset[str] = frozenset()
        self._rejected_status = 422
        self._failing_projects: dict[str, int] = {}
        self._down = False
        self._answer_bytes_sent: list[int] = []  # body bytes written, per answer with filler_bytes

        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0  # 0 until first start; then kept so "down then up" reuses it
        self._open_connections: set[socket.socket] = set()

    # ----------------------------------------------------------- lifecycle

    def start(self) -> "UpstreamServer":
        if self._httpd is not None:
            return self
        self._listen()
        with self._cond:
            self._down = False
        return self

    def stop(self) -> None:
        self._stop_listening()
        self._close_open_connections()

    def __enter__(self) -> "UpstreamServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("server not started")
        return f"{'https' if self._ssl_context else 'http'}://127.0.0.1:{self._port}"

    def _listen(self) -> None:
        httpd = _HTTPServer(("127.0.0.1", self._port), _Handler, self)
        if self._ssl_context is not None:
            httpd.socket = self._ssl_context.wrap_socket(httpd.socket, server_side=True)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"upstream-{self._port}", daemon=True,
        )
        self._thread.start()

    def _stop_listening(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _close_open_connections(self) -> None:
        # Keep-alive connections outlive the listening socket; cut them so a
        # client's pooled connection sees the outage too.
        with self._cond:
            connections = list(self._open_connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ----------------------------------------------------------- faults

    def fail_next(self, n: int = 1, status: int = 503, headers: dict[str, str] | None = None,
                  body: Any = None, *, filler_bytes: int = 0, echo_headers: bool = False) -> None:
        """Answer the next n requests with `status` instead of handling them.

        `body` may be a dict/list (sent as JSON), str or bytes; default is a
        FastAPI-like {"detail": ...}. Calls repeat: answers queue up in order.
        `filler_bytes` streams that many more bytes after the body (Content-Length
        counts them) until the client stops reading: answer_bytes_sent says how far
        it got. `echo_headers` answers with the request's headers as JSON, as a
        debugging proxy does (the Authorization header included).
        """
        answer = _ScriptedAnswer(status, dict(headers or {}), body, filler_bytes, echo_headers)
        with self._cond:
            self._scripted.extend([answer] * n)

    def set_down(self, down: bool) -> None:
        """Simulate an outage: stop listening (new connections are refused) and
        cut open connections; a request that still slips through is dropped
        without an answer. set_down(False) listens again on the same port."""
        with self._cond:
            self._down = down
        if down:
            self._stop_listening()
            self._close_open_connections()
        elif self._httpd is None and self._port:
            self._listen()

    def fail_project(self, project: str, status: int | None = 503) -> None:
        """Answer every request for `project` ("entity/project") with `status` until fail_project(project,
        None); requests for other projects are handled as usual."""
        with self._cond:
            if status is None:
                self._failing_projects.pop(project, None)
            else:
                self._failing_projects[project] = status

    def reject_ids(self, ids: Iterable[str], status: int = 422) -> None:
        """Reject (until changed) any request whose batch holds one of these
        call ids; nothing in such a request is accepted. reject_ids(()) clears."""
        with self._cond:
            self._rejected_ids = frozenset(ids)
            self._rejected_status = status

    # ----------------------------------------------------------- recordings

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every accepted call, in arrival order (duplicates included)."""
        with self._cond:
            return list(self._calls)

    @property
    def errors(self) -> list[str]:
        with self._cond:
            return list(self._errors)

    @property
    def answer_bytes_sent(self) -> list[int]:
        """Body bytes written for each answer with filler_bytes, in order."""
        with self._cond:
            return list(self._answer_bytes_sent)

    @property
    def attempts(self) -> list[Attempt]:
        with self._cond:
            return list(self._attempts)

    def calls_by_id(self) -> dict[str, dict[str, Any]]:
        """id -> call; for an id that arrived more than once, the latest one."""
        with self._cond:
            return {call["id"]: call for call in self._calls}

    def duplicate_ids(self) -> dict[str, int]:
        """id -> times accepted, for ids accepted more than once."""
        with self._cond:
            return {call_id: n for call_id, n in self._id_counts.items() if n > 1}

    def wait_for_calls(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least n calls were accepted; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._calls) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    statuses = [a.status for a in self._attempts]
                    raise AssertionError(
                        f"waited {timeout}s for {n} calls, only {len(self._calls)} arrived; "
                        f"attempt statuses: {statuses}; errors: {self._errors}"
                    )
                self._cond.wait(remaining)
            return list(self._calls)

    def assert_no_errors(self) -> None:
        errors = self.errors
        if errors:
            raise AssertionError(
                f"upstream received {len(errors)} invalid request(s):\n" + "\n".join(errors)
            )

    def reset(self) -> None:
        """Forget all recordings and scripted faults; bring the server back up if down."""
        with self._cond:
            self._requests.clear()
            self._calls.clear()
            self._id_counts.clear()
            self._errors.clear()
            self._attempts.clear()
            self._scripted.clear()
            self._rejected_ids = frozenset()
            self._rejected_status = 422
            self._failing_projects.clear()
            self._answer_bytes_sent.clear()
        self.max_body_bytes = None
        self.delay = 0.0
        self.retry_after = None
        self.set_down(False)

    # ----------------------------------------------------------- request handling (handler threads)

    def _handle(self, handler: "_Handler") -> None:
        arrived = time.monotonic()
        method, path = handler.command, urlsplit(handler.path).path
        headers = {name.lower(): value for name, value in handler.headers.items()}

        with self._cond:
            down = self._down
        if down:
            self._record_attempt(Attempt(arrived, method, path, None, "down"))
            handler.drop_connection()
            return

        raw = handler.read_body()
        if self.delay:
            time.sleep(self.delay)

        try:
            project, body, call_ids = self._process(method, path, headers, raw)
        except _Answer as answer:
            self._record_attempt(Attempt(arrived, method, path, answer.status, answer.reason,
                                         _best_effort_ids(raw, headers)))
            if answer.filler_bytes:
                sent = handler.send_streamed(answer.status, answer.body, answer.headers, answer.filler_bytes)
                with self._cond:
                    self._answer_bytes_sent.append(sent)
            else:
                handler.send_json(answer.status, answer.body, answer.headers)
            return

        with self._cond:
            self._requests.append(RecordedRequest(path, project, headers, body, len(raw)))
            self._calls.extend(body["batch"])
            self._id_counts.update(call_ids)
            self._attempts.append(Attempt(arrived, method, path, 200, "accepted", call_ids))
            self._cond.notify_all()
        handler.send_json(200, {})

    def _process(self, method: str, path: str, headers: dict[str, str],
                 raw: bytes) -> tuple[str, dict[str, Any], list[str]]:
        """Return (project, body, call ids) of an acceptable request, else raise _Answer."""
        with self._cond:
            scripted = self._scripted.popleft() if self._scripted else None
        if scripted is not None:
            raise self._scripted_answer(scripted, headers)

        route = ROUTE.match(path)
        if route is None:
            raise self._invalid(method, path, 404, {"detail": "Not Found"}, "no such route")
        if method != "POST":
            raise self._invalid(method, path, 405, {"detail": "Method Not Allowed"},
                                f"method {method} not allowed")

        with self._cond:
            failing = self._failing_projects.get("/".join(unquote(s) for s in route.group("entity", "project")))
        if failing is not None:
            raise _Answer(failing, {"detail": "project failing (scripted by test)"}, "fail_project")

        if self.max_body_bytes is not None and len(raw) > self.max_body_bytes:
            raise _Answer(413, {"detail": f"body of {len(raw)} bytes exceeds {self.max_body_bytes}"},
                          "too_large")

        if not self._authorized(headers.get("authorization", "")):
            raise _Answer(401, {"detail": "Unauthorized"}, "unauthorized",
                          {"WWW-Authenticate": 'Basic realm="weave"'})

        body = self._decode(method, path, headers, raw)
        project = "/".join(unquote(s) for s in route.group("entity", "project"))
        details = self._violations(body, project)
        if details:
            raise self._invalid(method, path, 422, {"detail": details},
                                *[f"{_loc_str(d['loc'])}: {d['msg']}" for d in details])

        call_ids = [call["id"] for call in body["batch"]]
        with self._cond:
            rejected, rejected_status = self._rejected_ids, self._rejected_status
        bad = [_detail(["body", "batch", i, "id"], f"call id {cid!r} rejected by test", "value_error")
               for i, cid in enumerate(call_ids) if cid in rejected]
        if bad:
            raise _Answer(rejected_status, {"detail": bad}, "rejected_ids")
        return project, body, call_ids

    def _scripted_answer(self, scripted: _ScriptedAnswer, request_headers: dict[str, str]) -> _Answer:
        headers = dict(scripted.headers)
        has_retry_after = any(k.lower() == "retry-after" for k in headers)
        if self.retry_after is not None and scripted.status in (429, 503) and not has_retry_after:
            headers["Retry-After"] = self.retry_after
        body = scripted.body if scripted.body is not None else {"detail": "injected fault"}
        if scripted.echo_headers:
            body = {"detail": "request refused", "request_headers": request_headers}
        return _Answer(scripted.status, body, "fail_next", headers, scripted.filler_bytes)

    def _authorized(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and user == AUTH_USER and password == self.api_key

    def _decode(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Any:
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as exc:
                raise self._invalid(method, path, 400, {"detail": "bad gzip body"}, f"bad gzip: {exc}") from None
        elif encoding != "identity":
            raise self._invalid(method, path, 415, {"detail": f"unsupported encoding {encoding}"},
                                f"unsupported Content-Encoding {encoding!r}")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            detail = _detail(["body", 0], f"JSON decode error: {exc}", "json_invalid")
            raise self._invalid(method, path, 422, {"detail": [detail]}, f"body is not JSON: {exc}") from None

    def _violations(self, body: Any, project: str) -> list[dict[str, Any]]:
        details = [_schema_detail(e) for e in
                   sorted(self._validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))]
        batch = body.get("batch") if isinstance(body, dict) else None
        for i, call in enumerate(batch if isinstance(batch, list) else []):
            project_id = call.get("project_id") if isinstance(call, dict) else None
            if isinstance(project_id, str) and project_id != project:
                details.append(_detail(["body", "batch", i, "project_id"],
                                       f"project_id {project_id!r} does not match path project {project!r}",
                                       "value_error"))
        return details

    def _invalid(self, method: str, path: str, status: int, body: Any, *violations: str) -> _Answer:
        with self._cond:
            self._errors.extend(f"{method} {path} -> {status}: {v}" for v in violations)
        return _Answer(status, body, "invalid")

    def _record_attempt(self, attempt: Attempt) -> None:
        with self._cond:
            self._attempts.append(attempt)

    def _track_connection(self, conn: socket.socket, open_: bool) -> None:
        with self._cond:
            if open_:
                self._open_connections.add(conn)
            else:
                self._open_connections.discard(conn)


def _schema_detail(error: ValidationError) -> dict[str, Any]:
    """A FastAPI-like detail entry for a jsonschema error."""
    loc: list = ["body", *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return _detail(loc + missing[:1], "Field required", "missing")
    if error.context:
        # anyOf (e.g. "string or null"): report the branch whose type matched,
        # so an uppercase parent_id says "pattern", not "is not of type 'null'".
        closer = [e for e in error.context if e.validator != "type"] or error.context
        error = best_match(closer) or error
    return _detail(loc, error.message, str(error.validator))


def _loc_str(loc: list) -> str:
    return ".".join(str(part) for part in loc)


def _payload(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _best_effort_ids(raw: bytes, headers: dict[str, str]) -> list[str]:
    """Call ids of a request we did not process, for Attempt records."""
    try:
        if headers.get("content-encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        return [call["id"] for call in json.loads(raw)["batch"]]
    except Exception:  # any malformed body simply has no known ids
        return []


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung client connection never blocks interpreter exit
    block_on_close = False  # server_close() must not wait for keep-alive connections

    def __init__(self, address: tuple[str, int], handler: type, upstream: UpstreamServer):
        self.upstream = upstream  # how handlers find the UpstreamServer
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real server
    server_version = "upstream-stub/1"

    @property
    def upstream(self) -> UpstreamServer:
        return self.server.upstream

    def setup(self) -> None:
        super().setup()
        self.upstream._track_connection(self.connection, True)

    def finish(self) -> None:
        self.upstream._track_connection(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def do_POST(self) -> None:
        self.upstream._handle(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF after each chunk

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = _payload(body)
        try:
            self._send_head(status, len(payload), headers)
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # client gave up (e.g. its timeout); nothing to answer

    def send_streamed(self, status: int, body: Any, headers: dict[str, str], filler_bytes: int) -> int:
        """The body, then filler_bytes of filler, until the client stops reading; returns body bytes written."""
        payload = _payload(body)
        chunk = b"x" * 65536
        sent = 0
        self.close_connection = True
        try:
            self._send_head(status, len(payload) + filler_bytes, headers)
            self.wfile.write(payload)
            sent = len(payload)
            while sent < len(payload) + filler_bytes:
                piece = chunk[: len(payload) + filler_bytes - sent]
                self.wfile.write(piece)
                sent += len(piece)
        except OSError:
            pass  # the client closed the connection: it read what it wanted
        return sent

    def _send_head(self, status: int, length: int, headers: dict[str, str] | None) -> None:
        headers = headers or {}
        self.send_response(status)
        if not any(name.lower() == "content-type" for name in headers):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def drop_connection(self) -> None:
        """Close without answering, as a crashed server would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass  # attempts/errors are the log; stderr noise helps nobody

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            pass  # connection cut by set_down()/stop() or by the client
