"""Accepting TCP connections for an HTTP server (otel_bridge/http_server.py): at most `max_connections` open at once, and a listener
that rides out a process short of file descriptors instead of flooding the log.

asyncio's own accept loop (loop.create_server) does neither: at the fd limit every failed accept() is logged
with its traceback, and on EMFILE it keeps calling accept() in the same tick and schedules one retry per
failure, so the retries multiply (the bridge logged ~9,000 lines/s) while every listener of the process,
/healthz's too, stops accepting. This loop does what nginx, libuv and Go's net/http do instead:

- past `max_connections` a new connection is answered at once (`refusal`, e.g. a 503, then closed): it holds
  no fd, and the client learns to retry rather than hanging in the backlog;
- when accept() fails because fds or memory run short, accepting pauses (5 ms, doubling up to 1 s, reset by
  the next success): pending connections wait in the backlog until fds come back;
- a failed accept or a refused connection is logged at most once per `log_interval`, with how many more
  there were since.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Listener"]

log = logging.getLogger("otel_bridge")

# accept() failures that say the process or the system is short of something: wait for it to come back.
_SHORT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_FIRST_PAUSE = 0.005
_LONGEST_PAUSE = 1.0
_BACKLOG = 128


class _Throttled:
    """A warning logged at once, then at most once per interval: the occurrences in between are counted and
    told in one more line when the interval ends."""

    def __init__(self, interval: float, message: str) -> None:
        self._interval = interval
        self._message = message
        self._quiet_until = 0.0
        self._suppressed = 0
        self._flush: asyncio.TimerHandle | None = None

    def happened(self) -> None:
        now = time.monotonic()
        if now >= self._quiet_until:
            log.warning("%s", self._message)
            self._quiet_until = now + self._interval
        else:
            self._suppressed += 1
            if self._flush is None:
                self._flush = asyncio.get_running_loop().call_later(self._quiet_until - now, self._tell_suppressed)

    def _tell_suppressed(self) -> None:
        self._flush = None
        count, self._suppressed = self._suppressed, 0
        log.warning("%s (%d more in the last %gs)", self._message, count, self._interval)
        self._quiet_until = time.monotonic() + self._interval

    def cancel(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None


class _Counted(asyncio.Protocol):
    """The server's protocol for one connection, releasing the connection's slot once when it is lost."""

    __slots__ = ("_protocol", "_release")

    def __init__(self, protocol: asyncio.Protocol, release: Callable[[], None]) -> None:
        self._protocol = protocol
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return self._protocol.eof_received()

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        self._protocol.connection_lost(exc)


class Listener:
    """Binds host:port (every address it resolves to), then serves each accepted connection with
    `protocol_factory`, at most `max_connections` at once over all of them."""

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        name: str,
        max_connections: int,
        config_key: str,
        refusal: bytes = b"",
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 60.0,
        reuse_port: bool = False,
        log_interval: float = 30.0,
    ) -> None:
        self._factory = protocol_factory
        self.max_connections = max_connections
        self._refusal = b"" if ssl_context else refusal  # a plain-text answer means nothing inside TLS
        self._ssl_context = ssl_context
        self._handshake_timeout = handshake_timeout
        self._reuse_port = reuse_port
        self.open_connections = 0
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._name = name
        self._log_interval = log_interval
        self._accept_failed: dict[str, _Throttled] = {}  # per error
        self._refused = _Throttled(
            log_interval,
            f"{name}: {max_connections} connections open ({config_key}): new ones are refused at once",
        )

    def bind(self, host: str | None, port: int) -> int:
        """Binds and listens (an OSError says why it cannot); returns the port."""
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self._reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:  # its own socket for each family, as asyncio does
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(_BACKLOG)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        return self._sockets[0].getsockname()[1]

    def start(self) -> None:
        for sock in self._sockets:
            self._spawn(self._accept_loop(sock))

    async def close(self) -> None:
        """Stops accepting; the connections already open are the server's to close."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_sockets()
        for throttled in (*self._accept_failed.values(), self._refused):
            throttled.cancel()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        pause = _FIRST_PAUSE
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except (ConnectionAbortedError, InterruptedError):
                continue  # the peer left before we took it: nothing to tell
            except OSError as exc:
                if sock.fileno() == -1:
                    return  # closed
                self._accept_failure(exc).happened()
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LONGEST_PAUSE)
                continue
            pause = _FIRST_PAUSE
            if self.open_connections >= self.max_connections:
                self._refuse(conn)
                continue
            self.open_connections += 1
            self._spawn(self._serve(conn))

    def _accept_failure(self, exc: OSError) -> _Throttled:
        reason = exc.strerror or str(exc)
        throttled = self._accept_failed.get(reason)
        if throttled is None:
            hint = " (the process is short of file descriptors or memory)" if exc.errno in _SHORT_OF_RESOURCES else ""
            throttled = self._accept_failed[reason] = _Throttled(
                self._log_interval,
                f"{self._name}: cannot accept connections: {reason}{hint}; new ones wait, retrying",
            )
        return throttled

    def _refuse(self, conn: socket.socket) -> None:
        self._refused.happened()
        try:
            conn.setblocking(False)
            if self._refusal:
                try:  # what the client already sent, read so that closing does not reset the connection
                    conn.recv(65536)
                except OSError:
                    pass
                conn.send(self._refusal)
        except OSError:
            pass
        finally:
            conn.close()

    def _release(self) -> None:
        self.open_connections -= 1

    async def _serve(self, conn: socket.socket) -> None:
        counted = _Counted(self._factory(), self._release)
        served = False
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: counted,
                conn,
                ssl=self._ssl_context,
                ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
            )
            served = True
        except (OSError, TimeoutError):
            pass  # a TLS handshake that failed or timed out: nothing to serve, nothing to tell
        finally:
            if not served:  # the slot back, also when the listener closes during a handshake
                counted.release()
                conn.close()
