"""The queue's contract, run on both stores: memory and SQLite. Then what only the durable one does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from otel_bridge.errors import ConfigError, QueueFullError
from otel_bridge.queue import Batch, CallQueue, MemoryStore, SqliteStore, body_size, open_queue

TAKE = {"max_calls": 100, "max_bytes": 1_000_000, "linger": 0.0}


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def calls(prefix: str, n: int, size: int = 10) -> list[bytes]:
    return [f"{prefix}{i:0{size - len(prefix)}d}".encode() for i in range(n)]


@pytest.fixture(params=["memory", "sqlite"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """A function that opens the store under test; for SQLite, the same directory every time."""
    if request.param == "memory":
        return MemoryStore
    return lambda: SqliteStore(tmp_path / "queue")


def test_put_take_ack_in_order_with_sizes(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=10_000)
        await queue.put({"e/p": calls("a", 3)})
        await queue.put({"e/p": calls("b", 2)})
        assert (queue.size_calls, queue.size_bytes) == (5, 50)
        batch = await queue.take(**TAKE)
        assert batch.project == "e/p"
        assert batch.calls == calls("a", 3) + calls("b", 2)
        assert (queue.size_calls, queue.size_bytes) == (5, 50)  # in flight still counts
        queue.ack(batch)
        assert (queue.size_calls, queue.size_bytes) == (0, 0)
        assert queue.idle()
        await queue.close()

    run(scenario())


def test_put_is_all_or_nothing_and_the_bound_counts_calls_in_flight(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=100)
        await queue.put({"e/p": calls("a", 6)})
        with pytest.raises(QueueFullError, match=r"exporter\.queue\.max_bytes") as full:
            await queue.put({"e/p": calls("b", 2), "e/q": calls("c", 3)})
        assert full.value.retry_after > 0
        assert queue.size_calls == 6
        batch = await queue.take(**TAKE)
        with pytest.raises(QueueFullError):
            await queue.put({"e/p": calls("b", 5)})
        queue.ack(batch)
        await queue.put({"e/p": calls("b", 10)})  # exactly at the bound
        assert queue.size_bytes == 100
        assert (await queue.take(**TAKE)).calls == calls("b", 10)
        await queue.close()

    run(scenario())


def test_batches_respect_max_calls_and_max_bytes_and_a_large_call_goes_alone(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=100_000)
        big = b"x" * 500
        await queue.put({"e/p": [*calls("a", 5), big, *calls("b", 2)]})
        first = await queue.take(max_calls=3, max_bytes=1000, linger=0)
        assert first.calls == calls("a", 3)
        second = await queue.take(max_calls=100, max_bytes=body_size(20 + 500, 3) - 1, linger=0)
        assert second.calls == calls("a", 5)[3:]
        third = await queue.take(max_calls=100, max_bytes=100, linger=0)
        assert third.calls == [big]
        fourth = await queue.take(max_calls=100, max_bytes=100, linger=0)
        assert fourth.calls == calls("b", 2)
        for batch in (first, second, third, fourth):
            assert body_size(batch.nbytes, len(batch.calls)) == len(batch.body())
            queue.ack(batch)
        await queue.close()

    run(scenario())


def test_a_partial_batch_lingers_until_flush(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=10_000)
        await queue.put({"e/p": calls("a", 2)})
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await queue.take(max_calls=10, max_bytes=10_000, linger=60)
        assert not queue.idle()
        waiting = asyncio.create_task(queue.take(max_calls=10, max_bytes=10_000, linger=60))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        queue.flush()
        assert (await waiting).calls == calls("a", 2)
        await queue.close()

    run(scenario())


def test_a_full_batch_goes_without_lingering_and_a_waiting_take_wakes_on_put(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=10_000)
        waiting = asyncio.create_task(queue.take(max_calls=3, max_bytes=10_000, linger=60))
        await asyncio.sleep(0.01)
        await queue.put({"e/p": calls("a", 2)})
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await queue.put({"e/p": calls("b", 1)})
        assert (await asyncio.wait_for(waiting, 5)).calls == calls("a", 2) + calls("b", 1)
        await queue.close()

    run(scenario())


def test_nack_puts_the_batch_back_first_in_order(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=10_000)
        await queue.put({"e/p": calls("a", 4), "e/q": calls("q", 2)})
        first = await queue.take(max_calls=2, max_bytes=10_000, linger=0)
        assert first.calls == calls("a", 2)
        queue.nack(first)
        assert (queue.size_calls, queue.size_bytes) == (6, 60)
        again = await queue.take(max_calls=10, max_bytes=10_000, linger=0)
        assert (again.project, again.calls) == ("e/p", calls("a", 4))
        queue.ack(again)
        assert (await queue.take(**TAKE)).calls == calls("q", 2)
        await queue.close()

    run(scenario())


def test_projects_take_turns_oldest_first(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=10_000)
        await queue.put({"e/p": calls("p", 4)})
        await queue.put({"e/q": calls("q", 2)})
        order = []
        for _ in range(3):
            batch = await queue.take(max_calls=2, max_bytes=10_000, linger=0)
            order.append(batch.project)
            queue.ack(batch)
        assert order == ["e/p", "e/q", "e/p"]
        await queue.close()

    run(scenario())


def test_a_paused_project_waits_while_others_flow(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=10_000)
        await queue.put({"e/blocked": calls("b", 2), "e/ok": calls("o", 2)})
        queue.pause("e/blocked", 0.2)
        assert queue.paused_projects() == ["e/blocked"]
        ok = await queue.take(**TAKE)
        assert ok.project == "e/ok"
        queue.ack(ok)
        assert queue.idle()  # only a paused project is left: nothing to do now
        blocked = await asyncio.wait_for(queue.take(**TAKE), 5)
        assert blocked.calls == calls("b", 2)
        assert queue.paused_projects() == []
        await queue.close()

    run(scenario())


def test_a_put_whose_caller_gave_up_is_still_delivered(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=10_000)
        put = asyncio.create_task(queue.put({"e/p": calls("a", 3)}))
        await asyncio.sleep(0)
        put.cancel()  # an exporter's deadline passed while the calls were being stored
        await asyncio.sleep(0.1)
        assert (await asyncio.wait_for(queue.take(**TAKE), 5)).calls == calls("a", 3)
        await queue.close()

    run(scenario())


def test_many_concurrent_puts_keep_each_requests_order(open_store):
    async def scenario():
        queue = CallQueue(open_store(), max_bytes=10_000_000)
        await asyncio.gather(*(queue.put({f"e/p{i % 3}": calls(f"r{i}-", 50, 12)}) for i in range(30)))
        assert queue.size_calls == 1500
        seen: dict[str, list[bytes]] = {}
        while not queue.idle():
            batch = await queue.take(max_calls=64, max_bytes=10_000_000, linger=0)
            seen.setdefault(batch.project, []).extend(batch.calls)
            queue.ack(batch)
        for i in range(30):
            mine = [c for c in seen[f"e/p{i % 3}"] if c.startswith(f"r{i}-".encode())]
            assert mine == calls(f"r{i}-", 50, 12)
        await queue.close()

    run(scenario())


# ---- durable only


def test_what_was_not_acknowledged_survives_a_restart(tmp_path):
    directory = tmp_path / "queue"

    async def first_run():
        queue = open_queue(str(directory), max_bytes=10_000)
        await queue.put({"e/p": calls("a", 3), "e/q": calls("q", 1)})
        await queue.put({"e/p": calls("b", 2)})
        delivered = await queue.take(max_calls=3, max_bytes=10_000, linger=0)
        assert delivered.calls == calls("a", 3)
        queue.ack(delivered)
        in_flight = await queue.take(max_calls=1, max_bytes=10_000, linger=0)
        assert in_flight.calls == calls("q", 1)  # never acked: as if the process died while sending it
        await queue.close()

    async def second_run():
        queue = open_queue(str(directory), max_bytes=10_000)
        assert (queue.size_calls, queue.size_bytes) == (3, 30)
        found = {}
        while not queue.idle():
            batch = await queue.take(max_calls=10, max_bytes=10_000, linger=60)  # due at once: no lingering
            found[batch.project] = batch.calls
            queue.ack(batch)
        assert found == {"e/p": calls("b", 2), "e/q": calls("q", 1)}
        await queue.put({"e/p": calls("c", 1)})  # new ids do not collide with recovered ones
        await queue.close()

    async def third_run():
        queue = open_queue(str(directory), max_bytes=10_000)
        assert (await queue.take(**TAKE)).calls == calls("c", 1)
        await queue.close()

    run(first_run())
    run(second_run())
    run(third_run())


def test_one_directory_serves_one_bridge(tmp_path):
    async def scenario():
        queue = open_queue(str(tmp_path / "queue"), max_bytes=100)
        with pytest.raises(ConfigError, match="in use by another otel-bridge process"):
            SqliteStore(tmp_path / "queue")
        await queue.close()
        open_queue(str(tmp_path / "queue"), max_bytes=100)  # released on close

    run(scenario())


def test_an_unusable_directory_names_the_key(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"exporter\.queue\.directory"):
        SqliteStore(tmp_path / "file" / "queue")


def test_batch_body_is_the_calls_in_a_batch_object():
    batch = Batch("e/p", [b'{"id":"a"}', b'{"id":"b"}'])
    assert batch.body() == b'{"batch":[{"id":"a"},{"id":"b"}]}'
    assert body_size(batch.nbytes, 2) == len(batch.body())
