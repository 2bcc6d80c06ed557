"""Queue throughput, memory and SQLite: calls/s committed by put, and taken + acked.

    .venv/bin/python bench/queue_throughput.py [--calls-per-put 512] [--call-bytes 1500] [--puts 200]

Puts run 8 at a time, as concurrent Export requests do, so the SQLite store's group commit is in
play. Not a test: numbers depend on the machine and its disk.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from otel_bridge.exporter.queue import open_queue


async def measure(directory: str | None, puts: int, calls_per_put: int, call_bytes: int) -> None:
    queue = open_queue(directory, max_bytes=2**40)
    calls = {"bench/project": [b'{"id":"' + b"x" * (call_bytes - 9) + b'"}'] * calls_per_put}
    concurrent = asyncio.Semaphore(8)

    async def put() -> None:
        async with concurrent:
            await queue.put(calls)

    started = time.perf_counter()
    await asyncio.gather(*(put() for _ in range(puts)))
    put_seconds = time.perf_counter() - started
    started = time.perf_counter()
    while not queue.idle():
        queue.ack(await queue.take(max_calls=1000, max_bytes=10 * 2**20, linger=0))
    take_seconds = time.perf_counter() - started
    await queue.close()
    total = puts * calls_per_put
    print(
        f"{'sqlite' if directory else 'memory':6}  put {total / put_seconds:>12,.0f} calls/s "
        f"({total * call_bytes / put_seconds / 2**20:,.0f} MiB/s)   take+ack {total / take_seconds:>12,.0f} calls/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=200)
    parser.add_argument("--calls-per-put", type=int, default=512)
    parser.add_argument("--call-bytes", type=int, default=1500)
    args = parser.parse_args()
    asyncio.run(measure(None, args.puts, args.calls_per_put, args.call_bytes))
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(measure(directory, args.puts, args.calls_per_put, args.call_bytes))


if __name__ == "__main__":
    main()
