"""The durable queue's files when the disk or the file itself goes wrong (issue 12 items 8 and 9): a damaged
file is set aside and what can be read of it delivered, a full disk is named as such, and the bridge
recovers, and starts, on it. Real bridges, a real upstream, real files; a full disk is a real tmpfs."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import API_KEY, bridge_settings, free_port
from test_delivery import export, ids, spans_request, wait_until

from otel_bridge.telemetry.metrics import total

QUEUE_FILE = "queue.sqlite3"


def durable(upstream, directory: Path, **sections):
    return bridge_settings(upstream, exporter={"queue": {"directory": str(directory)}}, **sections)


def readyz(bridge) -> dict:
    return httpx.get(bridge.telemetry_url + "/readyz", timeout=5).json()


def set_aside_files(directory: Path, name: str = QUEUE_FILE) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(f"{name}.damaged-") and not p.name.endswith("-wal"))


def queue_calls(upstream, start_bridge, directory: Path, count: int, payload: int = 200) -> None:
    """`count` spans acknowledged while the upstream is down, left in the queue by a bridge that stopped."""
    upstream.set_down(True)
    bridge = start_bridge(durable(upstream, directory, shutdown_timeout="100ms"))
    for first in range(0, count, 20):
        assert export(bridge.grpc_endpoint, spans_request(first, min(20, count - first), payload=payload)).partial_success.rejected_spans == 0
    bridge.stop()


def damage_page(path: Path, page: int, pages: int = 1) -> None:
    with path.open("r+b") as f:
        f.seek(4096 * page)
        f.write(b"\xff" * (4096 * pages))  # no page type, no page number: SQLite reads it as damage


# --- item 8: damage ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["a page overwritten", "truncated to half", "zero length", "not a database"])
def test_a_damaged_queue_file_is_set_aside_and_what_can_be_read_is_delivered(upstream, start_bridge, tmp_path, caplog, damage):
    directory = tmp_path / "queue"
    queue_calls(upstream, start_bridge, directory, 200)
    path = directory / QUEUE_FILE
    size = path.stat().st_size
    assert not Path(f"{path}-wal").exists() and size > 40 * 4096  # checkpointed at close: the calls are in the file
    if damage == "a page overwritten":
        damage_page(path, size // 4096 // 2)
    elif damage == "truncated to half":
        os.truncate(path, size // 2)
    elif damage == "zero length":
        os.truncate(path, 0)
    else:
        damage_page(path, 0)

    upstream.set_down(False)
    bridge = start_bridge(durable(upstream, directory))  # starts: before, every start exited 2 (or lost all silently)
    aside = set_aside_files(directory)
    left = {"zero length": 0, "truncated to half": size // 2}.get(damage, size)
    assert len(aside) == 1 and aside[0].stat().st_size == left  # set aside as it was
    assert "was damaged" in caplog.text and str(aside[0]) in caplog.text
    assert (".recover" in caplog.text) is (damage != "zero length")
    checks = readyz(bridge)["checks"]
    assert checks["files"]["ok"] and checks["files"]["queue"]["set_aside"] == [str(aside[0])]

    readable = {"a page overwritten": 100, "truncated to half": 40, "zero length": 0, "not a database": 0}[damage]
    if readable:
        wait_until(lambda: len(upstream.calls_by_id()) >= readable, message=f"at least {readable} of the readable calls")
    # New spans flow as before, into a new file.
    assert export(bridge.grpc_endpoint, spans_request(1000, 5)).partial_success.rejected_spans == 0
    wait_until(lambda: ids(1000, 5) <= set(upstream.calls_by_id()), message="the new calls")
    delivered = set(upstream.calls_by_id())
    assert delivered <= ids(0, 200) | ids(1000, 5) and upstream.duplicate_ids() == {}
    families = {f.name: f for f in bridge.bridge.metrics.registry.collect()}
    assert [s.value for s in families["otelbridge_queue_file_set_aside"].samples if s.name.endswith("_total")] == [1.0, 0.0]
    bridge.stop()  # the file is locked while its bridge runs
    assert sqlite3.connect(path).execute("PRAGMA quick_check").fetchone() == ("ok",)


def test_a_page_damaged_while_the_bridge_runs_costs_only_the_calls_on_it(upstream, start_bridge, tmp_path, caplog):
    """The bridge reads the damage while delivering: it sets the file aside, counts the calls it lost, and
    delivers every other one (before, the project was stuck for good while Exports still got OK)."""
    directory = tmp_path / "queue"
    count = 3000  # ~5 MB of calls: more than SQLite's page cache, so most pages are read from the file
    queue_calls(upstream, start_bridge, directory, count, payload=1200)
    bridge = start_bridge(durable(upstream, directory))  # the upstream is still down
    assert bridge.bridge.queue.size_calls == count
    path = directory / QUEUE_FILE
    damage_page(path, path.stat().st_size // 4096 // 5, pages=2)  # early in the file: among the first calls sent

    upstream.set_down(False)
    queue = bridge.bridge.queue
    wait_until(lambda: queue.size_calls == 0, timeout=30, message="every call delivered or counted lost")
    wait_until(lambda: len(upstream.calls_by_id()) + queue.lost_calls == count, message="delivered + lost == queued")
    assert 0 < queue.lost_calls < 200
    assert upstream.duplicate_ids() == {} and set(upstream.calls_by_id()) <= ids(0, count)
    assert len(set_aside_files(directory)) == 1 and "could not be read back from the damaged queue file" in caplog.text
    text = httpx.get(bridge.telemetry_url + "/metrics", timeout=5).text
    assert f"otelbridge_queue_lost_calls_total {float(queue.lost_calls)}" in text
    assert export(bridge.grpc_endpoint, spans_request(5000, 5)).partial_success.rejected_spans == 0
    wait_until(lambda: ids(5000, 5) <= set(upstream.calls_by_id()), message="new calls after the damage")


@pytest.mark.parametrize("damage", ["zero length", "a page overwritten"])
def test_a_damaged_pending_file_is_set_aside_too(upstream, start_bridge, tmp_path, caplog, damage):
    directory = tmp_path / "queue"
    queue_calls(upstream, start_bridge, directory, 20)
    pending = directory / "pending.sqlite3"
    assert pending.exists()
    if damage == "zero length":
        os.truncate(pending, 0)
    else:
        damage_page(pending, 0)
    upstream.set_down(False)
    bridge = start_bridge(durable(upstream, directory))
    assert len(set_aside_files(directory, "pending.sqlite3")) == 1
    assert readyz(bridge)["checks"]["files"]["pending"]["set_aside"]
    wait_until(lambda: set(upstream.calls_by_id()) == ids(0, 20), message="the queued calls, whose file is whole")


def test_a_queue_file_of_another_format_still_refuses_to_start(tmp_path):
    """Not damage: a file this version cannot read is the operator's to deliver, never set aside."""
    from otel_bridge.errors import ConfigError
    from otel_bridge.exporter.queue_file import SqliteStore

    directory = tmp_path / "queue"
    directory.mkdir()
    db = sqlite3.connect(directory / QUEUE_FILE)
    db.execute("CREATE TABLE call_groups (id INTEGER PRIMARY KEY, project TEXT, sizes BLOB, calls BLOB)")
    db.execute("PRAGMA user_version=7")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="format 7"):
        SqliteStore(directory)
    assert set_aside_files(directory) == []


# --- item 9: a full disk ---------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 3 MiB filesystem (tmpfs): the disk under the queue fills up for real."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_queue(endpoint: str, first: int = 0) -> tuple[int, grpc.RpcError]:
    """Export 20-span requests until one is refused; (spans acknowledged, the refusal)."""
    n = first
    while True:
        try:
            export(endpoint, spans_request(n, 20, payload=2000))
        except grpc.RpcError as refusal:
            return n - first, refusal
        n += 20
        assert n < first + 20_000, "the disk never filled"


def test_a_full_disk_is_named_recovers_as_the_queue_drains_and_a_restart_starts_on_it(upstream, start_bridge, small_disk, caplog):
    directory = small_disk / "queue"
    upstream.set_down(True)
    bridge = start_bridge(durable(upstream, directory))
    acknowledged, refusal = fill_queue(bridge.grpc_endpoint)
    assert acknowledged > 0 and refusal.code() == grpc.StatusCode.UNAVAILABLE
    assert "disk full at" in refusal.details() and "bytes free" in refusal.details()
    assert "cannot rollback" not in caplog.text
    checks = readyz(bridge)["checks"]
    assert not checks["files"]["ok"] and checks["files"]["queue"]["write_error"].startswith("disk full at")
    assert "otelbridge_queue_file_write_failing{file=\"queue\"} 1.0" in httpx.get(bridge.telemetry_url + "/metrics").text

    # The upstream comes back: the queue drains, and the space it frees lets Exports in again (before: 503 on).
    upstream.set_down(False)
    wait_until(lambda: set(upstream.calls_by_id()) == ids(0, acknowledged), timeout=30, message="the queue drained")
    wait_until(lambda: _accepted(bridge.grpc_endpoint, 50_000), timeout=10, message="an Export accepted again")
    wait_until(lambda: readyz(bridge)["checks"]["files"]["ok"], message="/readyz sees the file writable")

    # Full again, then a restart on the full disk: it starts (before: exit 2) and delivers what it holds.
    upstream.set_down(True)
    more, _ = fill_queue(bridge.grpc_endpoint, first=100_000)
    bridge.stop()
    upstream.set_down(False)
    restarted = start_bridge(durable(upstream, directory))
    expected = ids(0, acknowledged) | ids(50_000, 20) | ids(100_000, more)
    wait_until(lambda: set(upstream.calls_by_id()) == expected, timeout=30, message="every acknowledged call delivered")
    # Calls delivered while their deletes could not be written are sent again after the restart (same id).
    assert set(upstream.duplicate_ids()) <= expected
    assert total(restarted.bridge.metrics.dead_lettered_calls) == 0


def _accepted(endpoint: str, first: int) -> bool:
    try:
        export(endpoint, spans_request(first, 20, payload=2000))
    except grpc.RpcError:
        return False
    return True


def test_a_bridge_starts_on_a_full_disk_with_no_queue_file_yet(upstream, small_disk, bridge_process, tmp_path):
    """No room even for a new file: it serves (refusing with the reason) and creates the file once there is room."""
    filler = small_disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    port, telemetry = free_port(), free_port()
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"receiver: {{grpc: {{endpoint: '127.0.0.1:{port}'}}, http: null}}\n"
        f"exporter:\n"
        f"  weave: {{base_url: '{upstream.url}', api_key: '{API_KEY}'}}\n"
        f"  queue: {{directory: '{small_disk / 'queue'}'}}\n"
        f"  batch: {{flush_interval: 50ms}}\n"
        f"telemetry: {{endpoint: '127.0.0.1:{telemetry}'}}\n"
    )
    bridge = bridge_process(config, port)
    with pytest.raises(grpc.RpcError) as refused:
        export(f"127.0.0.1:{port}", spans_request(0, 5))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "disk full at" in refused.value.details()
    assert httpx.get(f"http://127.0.0.1:{telemetry}/readyz").status_code == 503
    filler.unlink()
    wait_until(lambda: _accepted(f"127.0.0.1:{port}", 100), message="an Export accepted once there is room")
    wait_until(lambda: ids(100, 20) <= set(upstream.calls_by_id()), message="its calls delivered")
    assert bridge.signal(signal.SIGTERM) == 0
