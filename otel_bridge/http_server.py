"""A small HTTP/1.1 server on asyncio: the OTLP/HTTP receiver and the telemetry endpoint each serve one.

h11 parses and frames (request heads, Content-Length and chunked bodies, keep-alive, 100-continue, the
protocol errors), so this module only routes a request to its handler and keeps a connection's limits:

- a request head not whole within `idle_timeout` of connecting or of the last answer closes the connection
  (a slowloris head, or a keep-alive connection gone idle); a head over 16 KiB is answered 431;
- a body is read as the handler asks for it, at most 256 KiB ahead, so a client cannot buffer more than
  the handler accepts; its time limit and size limit are the handler's (otel_bridge/receiver/http.py);
- a connection whose request was answered before its body was read whole is closed after the answer;
- a client that does not read its answers is not read either: past the transport's high-water mark the
  connection stops reading (and answering pipelined requests) until the answers drain.

It runs on the loop of the grpc.aio server and the exporter, so one process has one loop and no threads to
coordinate. Connections are accepted by otel_bridge/listener.py, which bounds how many are open.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate

import h11

from otel_bridge.listener import Listener
from otel_bridge.notation import split_endpoint

__all__ = ["Handler", "HttpServer", "Request", "Response", "Disconnected"]

log = logging.getLogger("otel_bridge")

_MAX_HEAD = 16 * 1024  # h11's bound on a head still arriving; a head that arrives in one read is held to it here
_READ_AHEAD = 256 * 1024  # body bytes buffered before the connection stops reading until the handler takes them
_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 413: b"Content Too Large", 415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 503: b"Service Unavailable",
}


class Disconnected(Exception):
    """The client closed the connection before its request body was whole."""


class Request:
    """One request: its head as sent, and its body read on demand (`body_chunks`).

    `headers` has lower-case names; a repeated header's values are joined with ", " (RFC 9110 5.3)."""

    __slots__ = ("method", "path", "headers", "_connection")

    def __init__(self, method: str, path: str, headers: dict[str, str], connection: _Connection) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self._connection = connection

    @property
    def content_type(self) -> str:
        """The media type without its parameters, lower case ("" when there is none)."""
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        length = self.headers.get("content-length")
        return int(length) if length is not None else None  # h11 has checked it is a number

    def body_chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; Disconnected when the client leaves before its end."""
        return self._connection.body_chunks()


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


Handler = Callable[[Request], Awaitable[Response]]
# path -> (the methods it answers, None for all of them: the handler answers 405 itself; the handler)
Routes = dict[str, tuple[frozenset[str] | None, Handler]]


class _Date:
    """The Date header, formatted once a second rather than once an answer."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


_date = _Date()


class _Connection(asyncio.Protocol):
    """One client connection: requests in turn, each answered before the next is read."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self._transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        # The body of the request being handled: chunks received and not yet taken, and whether it ended.
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._body_ended = False
        self._lost = False
        self._wakeup: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False  # the client is not reading its answers: neither read nor answer more
        self.closing = False  # set by the server's stop(): answer the request in hand, then close

    # --- asyncio.Protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self._h11.receive_data(data)
        self._next_events()

    def eof_received(self) -> bool | None:
        self._h11.receive_data(b"")
        self._next_events()
        return None  # the transport closes itself; a half-closed client gets no answer, as with most servers

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._task is None:
            self._resume_reading()
            self._next_events()  # a pipelined request already received
        elif self._h11.their_state is h11.SEND_BODY and self._buffered <= _READ_AHEAD:
            self._resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server.connections.discard(self)
        self._cancel_idle()
        self._wake()

    # --- reading ----------------------------------------------------------------------------------------

    def _next_events(self) -> None:
        while not self._lost:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._refuse_malformed(exc)
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:  # the next request, pipelined: read once this one is answered
                self._pause_reading()
                return
            if isinstance(event, h11.Request):
                self._cancel_idle()
                self._start(event)
            elif isinstance(event, h11.Data):
                self._chunks.append(bytes(event.data))
                self._buffered += len(event.data)
                if self._buffered > _READ_AHEAD:
                    self._pause_reading()
                self._wake()
            elif isinstance(event, h11.EndOfMessage):
                self._body_ended = True
                self._wake()
            elif isinstance(event, h11.ConnectionClosed):
                if self._task is None:
                    self._close()
                return

    async def body_chunks(self) -> AsyncIterator[bytes]:
        if self._h11.they_are_waiting_for_100_continue:
            self._write(h11.InformationalResponse(status_code=100, headers=[]))
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= _READ_AHEAD and self._h11.their_state is h11.SEND_BODY:
                    self._resume_reading()
                yield chunk
            elif self._body_ended:
                return
            elif self._lost:
                raise Disconnected("the client closed the connection before its request body was whole")
            else:
                self._wakeup = asyncio.get_running_loop().create_future()
                await self._wakeup

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self._lost and not self._writing_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    # --- handling ---------------------------------------------------------------------------------------

    def _start(self, head: h11.Request) -> None:
        if len(head.target) + sum(len(name) + len(value) + 4 for name, value in head.headers) > _MAX_HEAD:
            self._refuse_malformed(h11.RemoteProtocolError(f"request head over {_MAX_HEAD} bytes", 431))
            return
        target = head.target.decode("ascii", "replace")
        path = target.partition("?")[0]
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        request = Request(head.method.decode("ascii"), path, headers, self)
        self._chunks.clear()
        self._buffered = 0
        self._body_ended = False
        self._task = asyncio.get_running_loop().create_task(self._handle(request))

    async def _handle(self, request: Request) -> None:
        task = asyncio.current_task()
        try:
            response = await self._server.respond(request)
        except Disconnected:
            return
        except asyncio.CancelledError:
            if self._task is not task:
                return  # cancelled by _refuse_malformed, which answers
            raise
        except Exception:
            log.exception("%s: %s %s failed", self._server.name, request.method, request.path)
            response = Response(500, b"500 internal server error")
        finally:
            if self._task is task:
                self._task = None
        self._answer(response, head_only=request.method == "HEAD")

    def _answer(self, response: Response, head_only: bool = False) -> None:
        if self._lost:
            return
        headers = [
            (b"server", b"otel-bridge"),
            (b"date", _date()),
            (b"content-type", response.content_type.encode()),
            (b"content-length", str(len(response.body)).encode()),
        ]
        if response.headers:
            headers.extend((name.encode(), value.encode()) for name, value in response.headers.items())
        # Not read whole (refused early, or timed out): the rest of the body would be read as the next request.
        unread_body = self._h11.their_state is not h11.DONE
        if unread_body or self.closing:
            headers.append((b"connection", b"close"))
        reason = _REASONS.get(response.status, b"")
        try:
            self._write(h11.Response(status_code=response.status, headers=headers, reason=reason))
            if response.body and not head_only:
                self._write(h11.Data(data=response.body))
            self._write(h11.EndOfMessage())
        except h11.LocalProtocolError:  # the client's half no longer allows an answer
            self._close()
            return
        if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
            self._close()  # MUST_CLOSE: Connection: close was sent or asked for
            return
        self._h11.start_next_cycle()
        self._arm_idle()
        if not self._writing_paused:  # else resume_writing goes on
            self._resume_reading()
            self._next_events()  # a pipelined request already received

    def _refuse_malformed(self, exc: h11.RemoteProtocolError) -> None:
        if self._task is not None:  # a body that breaks off its framing: its handler is still reading it
            self._task.cancel()
            self._task = None
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            message = f"{status} {str(exc) or 'malformed request'}".encode()
            headers = [
                (b"server", b"otel-bridge"),
                (b"date", _date()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(message)).encode()),
                (b"connection", b"close"),
            ]
            try:
                self._write(h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b"")))
                self._write(h11.Data(data=message))
                self._write(h11.EndOfMessage())
            except h11.LocalProtocolError:
                pass
        self._close()

    def _write(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data and self._transport is not None and not self._lost:
            self._transport.write(data)

    # --- closing ----------------------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        self._cancel_idle()
        if self.closing:
            self._close()
            return
        self._idle = asyncio.get_running_loop().call_later(self._server.idle_timeout, self._close)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _close(self) -> None:
        self._cancel_idle()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size():
                # close() waits for the answers to be read: a client that never reads them would keep the
                # connection (and its place under max_connections) for good.
                asyncio.get_running_loop().call_later(self._server.idle_timeout, transport.abort)

    @property
    def busy(self) -> bool:
        return self._task is not None

    def shut(self) -> None:
        """For stop(): closes an idle connection now, a busy one after its answer."""
        self.closing = True
        if self._task is None:
            self._close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _refusal(config_key: str) -> bytes:
    """The answer to a connection past the bound, before its request is read: 503, retry in a few seconds."""
    body = f"503 too many connections ({config_key}), retry later".encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nServer: otel-bridge\r\nRetry-After: 5\r\nConnection: close\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class HttpServer:
    """start() binds `endpoint` (port 0: any free port, see `.port`) and serves `routes`; stop() lets
    in-flight requests finish, for at most `shutdown_timeout`.

    At most `max_connections` are open at once (`max_connections_key` names the bound); one more is
    answered 503 at once (otel_bridge/listener.py)."""

    def __init__(
        self,
        name: str,
        routes: Routes,
        endpoint: str,
        *,
        config_key: str,
        ssl_context: ssl.SSLContext | None = None,
        security: str = "",
        shutdown_timeout: float = 5.0,
        reuse_port: bool = False,
        idle_timeout: float = 75.0,
        max_connections: int,
        max_connections_key: str,
        log_interval: float = 30.0,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self._routes = routes
        self._config_key = config_key
        self._security = security
        self._shutdown_timeout = shutdown_timeout
        self._listener = Listener(
            lambda: _Connection(self),
            name=name,
            max_connections=max_connections,
            config_key=max_connections_key,
            refusal=_refusal(max_connections_key),
            ssl_context=ssl_context,
            handshake_timeout=idle_timeout,  # the TLS handshake is part of sending a request head
            reuse_port=reuse_port,  # only where workers share the port (receiver.workers)
            log_interval=log_interval,
        )
        self.port: int | None = None
        self.listening = False

    async def respond(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None:
            return Response(404, b"404 Not Found")
        methods, handler = route
        if methods is not None and request.method not in methods:
            allowed = ", ".join(sorted(methods))
            return Response(405, f"405 method not allowed, supported: [{allowed}]".encode(), headers={"Allow": allowed})
        return await handler(request)

    async def start(self) -> None:
        host, port = split_endpoint(self.endpoint)
        try:
            self.port = self._listener.bind(host, port)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.endpoint} ({self._config_key}): {exc.strerror or exc}") from None
        self._listener.start()
        self.listening = True
        log.info("%s listening on %s:%d%s", self.name, host, self.port, self._security)

    async def stop(self) -> None:
        self.listening = False
        await self._listener.close()
        for connection in list(self.connections):
            connection.shut()
        deadline = time.monotonic() + self._shutdown_timeout
        while any(connection.busy for connection in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.abort()
