"""`receiver.workers` > 1: one supervisor process, N worker processes that each run a whole bridge.

The mapping is CPU-bound Python, so one process uses one core. Workers bind the same receiver ports with
SO_REUSEPORT and the kernel spreads *connections* (not requests) over them. Each worker has its own
queue (`<exporter.queue.directory>/worker-<i>` when durable) and its own telemetry endpoint on the
configured port + i. The supervisor only starts, watches and stops them:

    SIGTERM/SIGINT            -> SIGTERM to every worker; each drains its queue; exit 0 if all exit 0, else 1
    worker fails to start     -> stop the others, exit 1 (a port in use, a bad file: restarting cannot help)
    worker dies while serving -> logged with its number, pid and exit status, and restarted (a durable queue
                                 resumes from its directory); more than _MAX_RESTARTS in _RESTART_WINDOW
                                 seconds -> stop the others, exit 1
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

from otel_bridge.config import Settings
from otel_bridge.notation import split_endpoint

__all__ = ["supervise", "worker_settings"]

log = logging.getLogger("otel_bridge.supervisor")

_MAX_RESTARTS = 5
_RESTART_WINDOW = 60.0


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker `index`'s settings: its own queue directory and telemetry port; the rest shared."""
    exporter, telemetry = settings.exporter, settings.telemetry
    if exporter.queue.directory:
        queue = exporter.queue.model_copy(update={"directory": str(Path(exporter.queue.directory) / f"worker-{index}")})
        exporter = exporter.model_copy(update={"queue": queue})
    if telemetry.endpoint:
        host, port = split_endpoint(telemetry.endpoint)
        host = f"[{host}]" if ":" in host else host
        telemetry = telemetry.model_copy(update={"endpoint": f"{host}:{port + index}"})
    return settings.model_copy(update={"exporter": exporter, "telemetry": telemetry})


def _run_worker(settings: Settings, index: int, ready: Any) -> None:
    """A worker's whole life: the same `serve` as a single bridge, with its own settings."""
    from otel_bridge.app import serve
    from otel_bridge.telemetry.logs import setup_logging

    setup_logging(settings.telemetry.log_level, settings.telemetry.log_format)

    def on_ready() -> None:
        ready.set()
        log.info("worker %d serving (pid %d)", index, os.getpid())

    try:
        asyncio.run(serve(settings, on_ready=on_ready))
    except OSError as exc:  # a port that cannot be bound; the message names its config key
        log.error("worker %d: %s", index, exc)
        raise SystemExit(1) from None
    finally:
        logging.shutdown()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


class _Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")  # no forked copies of grpc's threads
        self.workers: dict[int, tuple[Any, Any]] = {}  # index -> (process, ready event)
        self.restarts: deque[float] = deque()
        self.stopping = False
        self.failed = False

    def start(self, index: int) -> None:
        ready = self.context.Event()
        process = self.context.Process(
            target=_run_worker,
            args=(worker_settings(self.settings, index), index, ready),
            name=f"otel-bridge-worker-{index}",
        )
        process.start()
        self.workers[index] = (process, ready)
        log.info("worker %d started (pid %d)", index, process.pid)

    def stop_all(self, *_: Any) -> None:
        """SIGTERM to every worker still running: each drains its queue and exits."""
        self.stopping = True
        for process, _ in self.workers.values():
            if process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    def on_exit(self, index: int) -> None:
        process, ready = self.workers.pop(index)
        process.join()
        code = process.exitcode
        if self.stopping:
            # A worker still starting when SIGTERM came dies of it, having accepted nothing: not a failure.
            if code != 0 and not (code == -signal.SIGTERM and not ready.is_set()):
                self.failed = True
                log.error("worker %d (pid %d) %s while stopping", index, process.pid, _describe_exit(code))
            return
        if not ready.is_set():
            self.failed = True
            log.error("worker %d (pid %d) %s before it was serving; stopping the others", index, process.pid, _describe_exit(code))
            self.stop_all()
            return
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > _RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= _MAX_RESTARTS:
            self.failed = True
            log.error(
                "worker %d (pid %d) %s; %d restarts in the last %.0fs already, giving up: stopping the others",
                index, process.pid, _describe_exit(code), len(self.restarts), _RESTART_WINDOW,
            )
            self.stop_all()
            return
        self.restarts.append(now)
        log.error("worker %d (pid %d) %s; restarting it", index, process.pid, _describe_exit(code))
        self.start(index)

    def run(self) -> int:
        for index in range(self.settings.receiver.workers):
            self.start(index)
        while self.workers:
            by_sentinel = {process.sentinel: index for index, (process, _) in self.workers.items()}
            for sentinel in multiprocessing.connection.wait(list(by_sentinel)):
                self.on_exit(by_sentinel[sentinel])
        log.info("all workers stopped")
        return 1 if self.failed else 0


def supervise(settings: Settings) -> int:
    """Run `receiver.workers` workers until SIGTERM/SIGINT; the exit code for `serve`."""
    supervisor = _Supervisor(settings)
    signal.signal(signal.SIGTERM, supervisor.stop_all)
    signal.signal(signal.SIGINT, supervisor.stop_all)
    log.info("starting %d workers sharing the receiver ports (receiver.workers)", settings.receiver.workers)
    return supervisor.run()
