"""The queue's contract: order, batch bounds, linger, nack/ack, backpressure, flush, pauses. Every test
runs on both stores (memory and SQLite) through the `new_queue` fixture; the durable store's own
promises (restart, one bridge per directory) follow at the end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_bridge.errors import ConfigError, QueueFullError
from otel_bridge.exporter.envelope import body, body_chunks, body_size
from otel_bridge.exporter.queue import QUEUE_FULL_RETRY_AFTER, Batch, CallQueue, MemoryStore, open_queue
from otel_bridge.exporter.queue_file import SqliteStore

LONG = 30.0  # a linger no test waits for


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(test(), timeout=10))


def calls(prefix: str, n: int, size: int = 0) -> list[bytes]:
    """n distinct JSON calls, each exactly `size` bytes when size is given."""
    out = []
    for i in range(n):
        call = json.dumps({"id": f"{prefix}{i}"}).encode()
        if size:
            pad = size - len(call) - len(', "p": ""')
            assert pad >= 0
            call = json.dumps({"id": f"{prefix}{i}", "p": "x" * pad}).encode()
            assert len(call) == size
        out.append(call)
    return out


@pytest.fixture(params=["memory", "sqlite"])
def new_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., CallQueue]]:
    """new_queue(max_bytes=...) -> a CallQueue on the store under test (call it inside the test's loop)."""
    made: list[CallQueue] = []

    def make(*, max_bytes: int, max_project_share: float = 1.0) -> CallQueue:
        store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / f"queue-{len(made)}")
        made.append(CallQueue(store, max_bytes=max_bytes, max_project_share=max_project_share))
        return made[-1]

    yield make
    for queue in made:
        asyncio.run(queue.close())  # the SQLite store's thread, file and directory lock


async def take_now(queue: CallQueue, *, max_calls: int = 1000, max_bytes: int = 10**9) -> Batch:
    """A take that must return without lingering."""
    return await asyncio.wait_for(queue.take(max_calls=max_calls, max_bytes=max_bytes, linger=LONG), timeout=1.0)


def test_body_size_matches_batch_body() -> None:
    for n in range(0, 5):
        batch = Batch("e/p", calls("c", n))
        assert body_size(sum(len(c) for c in batch.calls), n) == len(body(batch.calls))
        assert json.loads(body(batch.calls)) == {"batch": [json.loads(c) for c in batch.calls]}


@pytest.mark.parametrize("chunk_bytes", [1, 10, 10**6])
def test_body_chunks_make_the_body(chunk_bytes: int) -> None:
    for n in range(0, 5):
        batch = Batch("e/p", calls("c", n))
        chunks = list(body_chunks(batch.calls, chunk_bytes))
        assert b"".join(chunks) == body(batch.calls)
        assert len(chunks) <= n + 1


def test_put_take_order_per_project(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        a, b = calls("a", 5), calls("b", 3)
        await queue.put({"e/a": a[:2], "e/b": b[:1]})
        await queue.put({"e/a": a[2:], "e/b": b[1:]})
        queue.flush()
        first = await take_now(queue)
        second = await take_now(queue)
        assert (first.project, first.calls) == ("e/a", a)
        assert (second.project, second.calls) == ("e/b", b)
        assert queue.size_calls == 8  # in flight until acked, like size_bytes
        queue.ack(first)
        queue.ack(second)
        assert queue.size_calls == 0 and queue.idle()

    run(scenario)


@pytest.mark.parametrize(("n", "max_calls", "sizes"), [(10, 3, [3, 3, 3, 1]), (4, 4, [4]), (5, 1, [1] * 5)])
def test_batches_bounded_by_max_calls(new_queue, n: int, max_calls: int, sizes: list[int]) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        sent = calls("c", n)
        await queue.put({"e/p": sent})
        queue.flush()
        got = [await take_now(queue, max_calls=max_calls) for _ in sizes]
        assert [len(b.calls) for b in got] == sizes
        assert [c for b in got for c in b.calls] == sent

    run(scenario)


@pytest.mark.parametrize(("call_size", "n", "max_bytes"), [(50, 10, 200), (50, 10, 12 + 50 * 3 + 2), (37, 7, 100)])
def test_batches_bounded_by_max_bytes(new_queue, call_size: int, n: int, max_bytes: int) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        sent = calls("c", n, size=call_size)
        await queue.put({"e/p": sent})
        queue.flush()
        got: list[Batch] = []
        while sum(len(b.calls) for b in got) < n:
            got.append(await take_now(queue, max_bytes=max_bytes))
        assert [c for b in got for c in b.calls] == sent
        taken = 0
        for batch in got:
            assert len(body(batch.calls)) <= max_bytes
            assert batch.nbytes == sum(len(c) for c in batch.calls)
            taken += len(batch.calls)
            if taken < n:  # the next call would not have fit: batches are as full as allowed
                assert len(body(batch.calls + [sent[taken]])) > max_bytes

    run(scenario)


def test_body_exactly_max_bytes_fits(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        sent = calls("c", 3, size=40)
        max_bytes = len(body(sent[:2]))  # two calls fill it exactly
        await queue.put({"e/p": sent})
        batch = await take_now(queue, max_bytes=max_bytes)  # full by bytes: no linger
        assert batch.calls == sent[:2]
        assert len(body(batch.calls)) == max_bytes

    run(scenario)


def test_single_call_larger_than_max_bytes_is_taken_alone(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        small1, small2 = calls("s", 2, size=30)
        [big] = calls("big", 1, size=500)
        await queue.put({"e/p": [small1, big, small2]})
        queue.flush()
        got = [await take_now(queue, max_bytes=100) for _ in range(3)]
        assert [b.calls for b in got] == [[small1], [big], [small2]]

    run(scenario)


def test_take_lingers_when_not_full(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        sent = calls("c", 2)
        await queue.put({"e/p": sent})
        started = time.monotonic()
        batch = await queue.take(max_calls=10, max_bytes=10**6, linger=0.05)
        assert time.monotonic() - started >= 0.04
        assert batch.calls == sent

    run(scenario)


def test_take_lingers_until_the_oldest_call_is_due(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        a, b = calls("c", 2)
        await queue.put({"e/p": [a]})
        await asyncio.sleep(0.03)
        await queue.put({"e/p": [b]})  # a later call does not restart the clock
        batch = await queue.take(max_calls=10, max_bytes=10**6, linger=0.06)
        assert batch.calls == [a, b]

    run(scenario)


def test_take_returns_at_once_when_full(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        sent = calls("c", 3)
        await queue.put({"e/p": sent})
        batch = await take_now(queue, max_calls=2)
        assert batch.calls == sent[:2]

    run(scenario)


def test_waiting_take_wakes_when_a_put_fills_the_batch(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        sent = calls("c", 3)
        waiter = asyncio.create_task(queue.take(max_calls=3, max_bytes=10**6, linger=LONG))
        await queue.put({"e/p": sent[:1]})
        await asyncio.sleep(0.02)
        assert not waiter.done()  # one call, not full: still lingering
        await queue.put({"e/p": sent[1:]})
        batch = await asyncio.wait_for(waiter, timeout=1.0)
        assert batch.calls == sent

    run(scenario)


def test_flush_makes_take_return_immediately(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        sent = calls("c", 1)
        await queue.put({"e/p": sent})
        waiter = asyncio.create_task(queue.take(max_calls=10, max_bytes=10**6, linger=LONG))
        await asyncio.sleep(0.02)
        assert not waiter.done()
        queue.flush()  # wakes the waiting take
        batch = await asyncio.wait_for(waiter, timeout=1.0)
        assert batch.calls == sent
        more = calls("d", 1)
        await queue.put({"e/p": more})  # and every later take
        assert (await take_now(queue)).calls == more

    run(scenario)


def test_nack_puts_calls_back_at_the_front_in_order(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        sent = calls("c", 5)
        await queue.put({"e/p": sent})
        first = await take_now(queue, max_calls=3)
        assert first.calls == sent[:3]
        queue.nack(first)
        # taken again first, in order, without lingering (they waited already)
        again = await take_now(queue, max_calls=3)
        assert again.calls == sent[:3]
        queue.flush()
        rest = await take_now(queue)
        assert rest.calls == sent[3:]

    run(scenario)


def test_nacked_project_is_served_before_other_projects(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        a, b = calls("a", 2), calls("b", 2)
        await queue.put({"e/a": a})
        await queue.put({"e/b": b})
        taken = await take_now(queue, max_calls=2)
        assert taken.project == "e/a"
        queue.nack(taken)
        queue.flush()
        assert [(x.project, x.calls) for x in [await take_now(queue), await take_now(queue)]] == [
            ("e/a", a),
            ("e/b", b),
        ]

    run(scenario)


def test_nack_before_newer_calls_of_the_same_project(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        old, new = calls("old", 2), calls("new", 2)
        await queue.put({"e/p": old})
        taken = await take_now(queue, max_calls=2)
        await queue.put({"e/p": new})
        queue.nack(taken)
        queue.flush()
        assert (await take_now(queue)).calls == old + new

    run(scenario)


def test_ack_frees_bytes(new_queue) -> None:
    async def scenario() -> None:
        sent = calls("c", 2, size=100)
        queue = new_queue(max_bytes=200)
        await queue.put({"e/p": sent})
        assert queue.size_bytes == 200
        batch = await take_now(queue, max_calls=2)
        assert queue.size_bytes == 200  # in flight still counts
        assert not queue.idle()
        with pytest.raises(QueueFullError):
            await queue.put({"e/p": calls("d", 1, size=100)})
        queue.ack(batch)
        assert queue.size_bytes == 0
        assert queue.idle()
        await queue.put({"e/p": calls("d", 2, size=100)})  # room again
        assert queue.size_bytes == 200

    run(scenario)


def test_nack_keeps_bytes_counted(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=300)
        await queue.put({"e/p": calls("c", 2, size=100)})
        batch = await take_now(queue, max_calls=1)
        queue.nack(batch)
        assert (queue.size_bytes, queue.size_calls) == (200, 2)

    run(scenario)


def test_put_beyond_max_bytes_is_refused_all_or_nothing(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=250)
        first = calls("a", 2, size=100)
        await queue.put({"e/a": first})
        with pytest.raises(QueueFullError) as refused:
            await queue.put({"e/a": calls("x", 1, size=30), "e/b": calls("y", 1, size=30)})
        assert refused.value.retry_after == QUEUE_FULL_RETRY_AFTER
        assert "max_bytes" in str(refused.value)
        assert (queue.size_bytes, queue.size_calls) == (200, 2)
        queue.flush()
        batch = await take_now(queue)
        assert (batch.project, batch.calls) == ("e/a", first)  # nothing from the refused put
        queue.ack(batch)
        assert queue.idle()
        await queue.put({"e/b": calls("z", 1, size=50)})  # exactly max_bytes in all is fine
        await queue.put({"e/b": calls("w", 2, size=100)})
        assert queue.size_bytes == 250

    run(scenario)


def test_projects_served_oldest_first(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        await queue.put({"e/a": [b'"a1"']})
        time.sleep(0.002)  # distinct enqueue times
        await queue.put({"e/b": [b'"b1"']})
        time.sleep(0.002)
        await queue.put({"e/a": [b'"a2"']})
        queue.flush()
        got = [await take_now(queue, max_calls=1) for _ in range(3)]
        # a2 is newer than b1: b1 must go before it
        assert [b.calls[0] for b in got] == [b'"a1"', b'"b1"', b'"a2"']

    run(scenario)


def test_busy_project_does_not_starve_others(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        await queue.put({"e/busy": calls("a", 4)})
        time.sleep(0.002)
        await queue.put({"e/quiet": calls("q", 1)})
        queue.flush()  # every project is due
        projects = []
        for i in range(3):
            batch = await take_now(queue, max_calls=2)  # busy is always full
            projects.append(batch.project)
            queue.ack(batch)
            time.sleep(0.002)
            await queue.put({"e/busy": calls(f"n{i}", 2)})
        assert "e/quiet" in projects

    run(scenario)


def test_projects_served_in_arrival_order_when_all_due(new_queue) -> None:
    async def scenario() -> None:
        queue = new_queue(max_bytes=10**6)
        for project in ("e/c", "e/a", "e/b"):
            await queue.put({project: calls(project, 1)})
            time.sleep(0.002)
        queue.flush()
        assert [(await take_now(queue)).project for _ in range(3)] == ["e/c", "e/a", "e/b"]

    run(scenario)


def test_a_paused_project_waits_while_others_flow(new_queue):
    async def scenario():
        queue = new_queue(max_bytes=10_000)
        queue.flush()  # no lingering
        await queue.put({"e/blocked": calls("b", 2), "e/ok": calls("o", 2)})
        queue.pause("e/blocked", 0.2)
        assert queue.paused_projects() == ["e/blocked"]
        ok = await take_now(queue)
        assert ok.project == "e/ok"
        queue.ack(ok)
        assert queue.idle()  # only a paused project is left: nothing to do now
        started = time.monotonic()
        blocked = await asyncio.wait_for(queue.take(max_calls=1000, max_bytes=10**9, linger=0), 5)
        assert blocked.calls == calls("b", 2)
        assert time.monotonic() - started >= 0.1
        assert queue.paused_projects() == []

    run(scenario)


def test_one_project_holds_at_most_its_share_and_gets_it_back_as_calls_are_acked(new_queue):
    async def scenario():
        queue = new_queue(max_bytes=1000, max_project_share=0.5)
        queue.flush()
        await queue.put({"e/stuck": calls("s", 4, size=100)})
        with pytest.raises(QueueFullError, match=r"share for project e/stuck is full \(400 of 500 bytes, exporter.queue.max_project_share = 0.5"):
            await queue.put({"e/stuck": calls("t", 2, size=100)})
        await queue.put({"e/other": calls("o", 3, size=100)})  # the rest of the queue is the others'
        with pytest.raises(QueueFullError, match="e/stuck"):  # all or nothing: e/other's calls are not kept either
            await queue.put({"e/other": calls("p", 1, size=100), "e/stuck": calls("u", 2, size=100)})
        assert queue.size_calls == 7
        stuck = await take_now(queue)  # in flight still counts toward the share
        assert stuck.project == "e/stuck"
        with pytest.raises(QueueFullError):
            await queue.put({"e/stuck": calls("t", 2, size=100)})
        queue.nack(stuck)
        stuck = await take_now(queue)
        queue.ack(stuck)  # delivered: its share is free again
        await queue.put({"e/stuck": calls("t", 5, size=100)})

    run(scenario)


def test_a_blocked_project_is_told_apart_from_a_throttled_one(new_queue):
    async def scenario():
        queue = new_queue(max_bytes=10_000)
        queue.pause("e/blocked", 0.2)
        queue.pause("e/throttled", 0.2, reason="throttled")
        assert queue.blocked("e/blocked") and not queue.blocked("e/throttled") and not queue.blocked("e/other")
        assert queue.paused_projects() == ["e/blocked"]
        assert queue.paused_projects("throttled") == ["e/throttled"]
        await asyncio.sleep(0.25)
        assert not queue.blocked("e/blocked")  # it expires: the next calls re-probe the upstream

    run(scenario)


def test_a_held_project_is_skipped_until_released(new_queue):
    async def scenario():
        queue = new_queue(max_bytes=10_000)
        queue.flush()  # no lingering
        await queue.put({"e/failing": calls("f", 2), "e/ok": calls("o", 2)})
        assert queue.hold("e/failing") is True  # one of its batches waits to be retried
        assert queue.hold("e/failing") is False  # one holder at a time
        ok = await take_now(queue)
        assert ok.project == "e/ok"
        queue.ack(ok)
        waiting = asyncio.create_task(queue.take(max_calls=1000, max_bytes=10**9, linger=0))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # only a held project has calls
        queue.release("e/failing")
        held = await asyncio.wait_for(waiting, 5)
        assert held.calls == calls("f", 2)
        assert queue.hold("e/failing") is True  # free again after release

    run(scenario)


def test_a_put_whose_caller_gave_up_is_still_delivered(new_queue):
    async def scenario():
        queue = new_queue(max_bytes=10_000)
        queue.flush()  # no lingering
        put = asyncio.create_task(queue.put({"e/p": calls("a", 3)}))
        await asyncio.sleep(0)
        put.cancel()  # an exporter's deadline passed while the calls were being stored
        await asyncio.sleep(0.1)
        assert (await asyncio.wait_for(queue.take(max_calls=1000, max_bytes=10**9, linger=0), 5)).calls == calls("a", 3)

    run(scenario)


def test_many_concurrent_puts_keep_each_requests_order(new_queue):
    async def scenario():
        queue = new_queue(max_bytes=10_000_000)
        await asyncio.gather(*(queue.put({f"e/p{i % 3}": calls(f"r{i}-", 50)}) for i in range(30)))
        assert queue.size_calls == 1500
        seen: dict[str, list[bytes]] = {}
        while not queue.idle():
            batch = await queue.take(max_calls=64, max_bytes=10_000_000, linger=0)
            seen.setdefault(batch.project, []).extend(batch.calls)
            queue.ack(batch)
        for i in range(30):
            mine = [c for c in seen[f"e/p{i % 3}"] if json.loads(c)["id"].startswith(f"r{i}-")]
            assert mine == calls(f"r{i}-", 50)

    run(scenario)


# ---- the durable store only


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
        assert (queue.size_calls, queue.size_bytes) == (3, sum(map(len, calls("b", 2) + calls("q", 1))))
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
        assert (await take_now(queue)).calls == calls("c", 1)
        await queue.close()

    run(first_run)
    run(second_run)
    run(third_run)


def test_one_directory_serves_one_bridge(tmp_path):
    async def scenario():
        queue = open_queue(str(tmp_path / "queue"), max_bytes=100)
        with pytest.raises(ConfigError, match="in use by another otel-bridge process"):
            SqliteStore(tmp_path / "queue")
        await queue.close()
        open_queue(str(tmp_path / "queue"), max_bytes=100)  # released on close

    run(scenario)


def test_deleting_files_in_the_directory_never_lets_two_bridges_share_it(tmp_path):
    async def scenario():
        queue = open_queue(str(tmp_path / "queue"), max_bytes=100)
        for leftover in (tmp_path / "queue").glob("lock"):  # the lock file earlier versions used
            leftover.unlink()
        with pytest.raises(ConfigError, match="in use by another otel-bridge process"):
            SqliteStore(tmp_path / "queue")
        await queue.close()

    run(scenario)


def test_an_unusable_directory_names_the_key(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"exporter\.queue\.directory"):
        SqliteStore(tmp_path / "file" / "queue")


def test_settled_before_waits_for_every_earlier_call_queued_or_in_flight(new_queue) -> None:
    """What the Kafka receiver commits by with the queue in memory: every call put by a moment is acked."""

    async def scenario() -> None:
        queue = new_queue(max_bytes=10_000)
        assert queue.settled_before(time.monotonic())  # nothing queued
        await queue.put({"e/a": calls("a", 2)})
        first = time.monotonic()
        await queue.put({"e/b": calls("b", 1)})
        second = time.monotonic()
        assert not queue.settled_before(first)
        queue.flush()
        a = await take_now(queue)  # e/a in flight, e/b queued
        assert a.project == "e/a" and not queue.settled_before(first)
        queue.nack(a)  # put back: older than anything
        a = await take_now(queue)
        queue.ack(a)
        assert queue.settled_before(first) and not queue.settled_before(second)
        b = await take_now(queue)
        assert not queue.settled_before(second)
        queue.ack(b)
        assert queue.settled_before(second)

    run(scenario)
