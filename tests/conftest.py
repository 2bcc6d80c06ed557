"""Shared fixtures: a clean environment, the upstream stand-in, and real bridges on 127.0.0.1."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from certs import Certs, make_certs  # noqa: E402
from upstream import UpstreamServer  # noqa: E402

from otel_bridge.app import Bridge  # noqa: E402
from otel_bridge.config import Settings  # noqa: E402

API_KEY = "test-api-key"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the bridge reads must come from the test, never from a developer's shell."""
    for name in ("WANDB_API_KEY", "WEAVE_PROJECT", "WF_TRACE_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the bridge writes by default (calls, dead letters) land in the test's own directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and one from another CA."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer(api_key=API_KEY) as server:
        yield server
        server.assert_no_errors()


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def bridge_settings(upstream: UpstreamServer | None = None, **sections: Any) -> Settings:
    """Settings for a test bridge: loopback ports chosen by the OS, short flush interval."""
    base: dict[str, Any] = {
        "shutdown_timeout": "5s",
        "receiver": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}},
        "exporter": {"batch": {"flush_interval": "50ms"}, "retry": {"initial_interval": "50ms", "max_interval": "200ms"}},
        "telemetry": {"endpoint": "127.0.0.1:0"},
    }
    if upstream is not None:
        base["exporter"]["weave"] = {"base_url": upstream.url, "api_key": API_KEY}
    return Settings.model_validate(_merge(base, sections))


class RunningBridge:
    """A Bridge on its own event loop in a background thread, driven from synchronous test code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bridge-loop", daemon=True)
        self.bridge: Bridge | None = None
        self._stopping: concurrent.futures.Future | None = None

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> RunningBridge:
        self._thread.start()

        async def build_and_start() -> Bridge:
            bridge = Bridge(self.settings)
            await bridge.start()
            return bridge

        self.bridge = self.call(build_and_start())
        return self

    @property
    def grpc_endpoint(self) -> str:
        assert self.bridge and self.bridge.grpc
        return f"127.0.0.1:{self.bridge.grpc.port}"

    @property
    def http_url(self) -> str:
        """Base URL of the OTLP/HTTP receiver (https when it serves TLS); POST {http_url}/v1/traces."""
        assert self.bridge and self.bridge.http
        scheme = "https" if self.settings.receiver.http.tls else "http"
        return f"{scheme}://127.0.0.1:{self.bridge.http.port}"

    @property
    def telemetry_url(self) -> str:
        assert self.bridge and self.bridge.telemetry
        return f"http://127.0.0.1:{self.bridge.telemetry.port}"

    def begin_stop(self) -> concurrent.futures.Future:
        """Start stopping without waiting, to watch the bridge while it drains; stop() then finishes."""
        assert self.bridge is not None
        self._stopping = asyncio.run_coroutine_threadsafe(self.bridge.stop(), self._loop)
        return self._stopping

    def stop(self) -> None:
        if self.bridge is not None:
            if self._stopping is not None:
                self._stopping.result(30)
            else:
                self.call(self.bridge.stop())
            self.bridge = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def start_bridge() -> Iterator[Any]:
    """start_bridge(settings) -> a RunningBridge, stopped at the end of the test."""
    running: list[RunningBridge] = []

    def start(settings: Settings) -> RunningBridge:
        bridge = RunningBridge(settings).start()
        running.append(bridge)
        return bridge

    yield start
    for bridge in reversed(running):
        if bridge.bridge is not None:
            bridge.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_grpc(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    """Wait until the process listens on the gRPC port; fail at once if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the bridge exited with {proc.returncode}"
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return
        except grpc.FutureTimeoutError:
            continue
    raise AssertionError(f"bridge did not listen on {port}")


class BridgeProcess:
    """`python -m otel_bridge serve --config FILE` as a user runs it; its log goes to a file (never a full pipe)."""

    def __init__(self, config: Path, port: int, log: Path, open_files: int | None = None) -> None:
        self.log_path = log
        env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WEAVE_PROJECT", "WF_TRACE_SERVER_URL")}

        def limit_open_files() -> None:  # in the child, before exec
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        with log.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "otel_bridge", "serve", "--config", str(config)],
                stderr=stderr,
                cwd=config.parent,
                env=env,
                preexec_fn=limit_open_files,
            )
        wait_for_grpc(port, self.proc)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, sig: int, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def bridge_process(tmp_path: Path) -> Iterator[Any]:
    """bridge_process(config, port[, open_files]) -> a running BridgeProcess (RLIMIT_NOFILE open_files), killed at
    the end of the test if still running."""
    started: list[BridgeProcess] = []

    def start(config: Path, port: int, open_files: int | None = None) -> BridgeProcess:
        process = BridgeProcess(config, port, tmp_path / f"bridge-{len(started)}.log", open_files)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
