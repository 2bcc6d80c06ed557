"""How long the event loop stalls while a large request maps: inline on the loop, in one worker thread (what
the bridge does, pipeline.py), or in a worker process.

    python bench/loop_fairness.py [--spans 30000] [--attributes 20] [--rounds 3]

Maps the same request `--rounds` times per mode while a ticker on the loop sleeps 5 ms at a time and records
how late it wakes: that lateness is what /healthz and every other client see. Prints, per mode, the worst
and the 99th-percentile lateness, the wall time per request, and this process's CPU per request (a process
pool's work is in its worker, so its CPU is the wall time there). Chunked work with yields is not a mode:
decoding a request is one call into the C decoder, and a request's calls are built in one pass over it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402
from spans import request  # noqa: E402

from otel_bridge.config import Mapping  # noqa: E402
from otel_bridge.pipeline import Mapper  # noqa: E402

_MAPPER: Mapper | None = None


def _map(data: bytes) -> dict[str, list[bytes]]:
    """The calls, as the pipeline queues them (a process pool pickles them back to the loop's process)."""
    global _MAPPER
    if _MAPPER is None:  # once per process
        _MAPPER = Mapper.from_config(Mapping())
    return _MAPPER.map(data, header_project=None, default_project="").calls


def _request(spans: int, attributes: int) -> bytes:
    attrs = [KeyValue(key=f"app.key{j}", value=AnyValue(string_value=f"value {j}")) for j in range(attributes)]
    return request(
        *(
            Span(trace_id=b"\x01" * 16, span_id=i.to_bytes(8, "big"), name="op", start_time_unix_nano=1, end_time_unix_nano=2, attributes=attrs)
            for i in range(1, spans + 1)
        ),
        resource={"wandb.entity": "e", "wandb.project": "p"},
    ).SerializeToString()


async def _measure(data: bytes, rounds: int, executor: Executor | None) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    late: list[float] = []
    stop = False

    async def ticker() -> None:
        while not stop:
            before = loop.time()
            await asyncio.sleep(0.005)
            late.append(loop.time() - before - 0.005)

    if executor is not None:  # start the worker (and, for a process, build its mapper) before timing
        await loop.run_in_executor(executor, _map, _request(1, 0))
    tick = asyncio.create_task(ticker())
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        if executor is None:
            _map(data)
            await asyncio.sleep(0)
        else:
            await loop.run_in_executor(executor, _map, data)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop = True
    await tick
    late.sort()
    return {
        "worst_ms": late[-1] * 1000,
        "p99_ms": late[int(len(late) * 0.99)] * 1000,
        "wall_s": wall / rounds,
        "cpu_s": cpu / rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=30_000)
    parser.add_argument("--attributes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = _request(args.spans, args.attributes)
    print(f"request: {args.spans} spans x {args.attributes} attributes, {len(data) / 1e6:.1f} MB of protobuf")
    print(f"{'mode':<10}{'worst stall':>14}{'p99 stall':>12}{'wall/request':>15}{'CPU here/request':>19}")
    modes: list[tuple[str, Executor | None]] = [
        ("inline", None),
        ("thread", ThreadPoolExecutor(max_workers=1)),
        ("process", ProcessPoolExecutor(max_workers=1)),
    ]
    for name, executor in modes:
        figures = asyncio.run(_measure(data, args.rounds, executor))
        print(
            f"{name:<10}{figures['worst_ms']:>11.1f} ms{figures['p99_ms']:>9.1f} ms"
            f"{figures['wall_s']:>13.2f} s{figures['cpu_s']:>17.2f} s"
        )
        if executor is not None:
            executor.shutdown()


if __name__ == "__main__":
    main()
