"""Item 12.17: what the bridge writes (queue, dead letters, the JSONL sink) holds prompts and outputs, so
only the bridge's user may read it, whatever the umask."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from conftest import bridge_settings
from otel_bridge.errors import PermanentError
from otel_bridge.exporter.dead_letter import DeadLetterFile
from otel_bridge.exporter.file import FileSender
from otel_bridge.exporter.queue import Batch
from otel_bridge.exporter.queue_file import SqliteStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask():
    """The common default umask (022) is what made the files world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_durable_queue_directory_and_its_files_are_owner_only(tmp_path, start_bridge):
    directory = tmp_path / "state" / "queue"
    bridge = start_bridge(bridge_settings(exporter={"queue": {"directory": str(directory)}}))
    bridge.stop()
    assert _mode(tmp_path / "state") == 0o700  # parents it created, too
    assert _mode(directory) == 0o700
    files = list(directory.iterdir())
    assert {"queue.sqlite3"} <= {f.name for f in files}
    assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_sqlite_side_files_take_the_database_mode(tmp_path):
    async def append_and_look() -> dict[str, int]:
        store = SqliteStore(tmp_path / "q")
        try:
            await store.append({"e/p": [b'{"id":"1"}']})
            return {f.name: _mode(f) for f in (tmp_path / "q").iterdir() if f.name.endswith(("-wal", "-shm"))}
        finally:
            await store.close()

    side = asyncio.run(append_and_look())
    assert side, "WAL mode makes -wal and -shm files"
    assert side == {name: 0o600 for name in side}


def test_the_dead_letter_file_is_owner_only(tmp_path):
    path = tmp_path / "dead" / "letters.jsonl"
    asyncio.run(DeadLetterFile(str(path)).write(Batch("e/p", [b'{"id":"1"}']), PermanentError("400", status=400), "refused"))
    assert path.read_text().count("\n") == 1
    assert (_mode(path.parent), _mode(path)) == (0o700, 0o600)


def test_the_jsonl_sink_is_owner_only(tmp_path):
    path = tmp_path / "out" / "calls.jsonl"

    async def write() -> None:
        sink = FileSender(str(path))
        await sink.send(Batch("e/p", [b'{"id":"1"}']))
        await sink.close()

    asyncio.run(write())
    assert (_mode(path.parent), _mode(path)) == (0o700, 0o600)


def test_an_existing_directory_keeps_the_mode_the_operator_gave_it(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o750)
    directory.chmod(0o750)
    asyncio.run(DeadLetterFile(str(directory / "dl.jsonl")).write(Batch("e/p", [b"{}"]), PermanentError("400"), "refused"))
    assert (_mode(directory), _mode(directory / "dl.jsonl")) == (0o750, 0o600)
