"""Memory of the per-trace stage under a long run: status roll-up and usage dedupe memory, and the log join's
waiting records, stay bounded (traces.max_spans, traces.logs.window) however many traces pass.

    .venv/bin/python bench/trace_stage.py [--traces 200000]

Prints the traced memory (tracemalloc) after each fifth of the run: it grows until the bound is reached,
then stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import tracemalloc

from otel_bridge.config import Traces
from otel_bridge.decode.logs import LogRecord
from otel_bridge.exporter.queue import open_queue
from otel_bridge.traces import TraceStage


def _call(trace: int, span: int, parent: int | None) -> dict:
    return {
        "id": f"{span:016x}", "trace_id": f"{trace:032x}", "parent_id": None if parent is None else f"{parent:016x}",
        "exception": None, "summary": {"weave": {}, "usage": {"m": {"input_tokens": 1}}}, "attributes": {},
        "otel_dump": {"resource": {"attributes": {}}},
    }


async def main(traces: int) -> None:
    config = Traces.model_validate({"max_spans": 20_000, "logs": {"window": "0"}})
    stage = TraceStage(config, queue=open_queue(None, max_bytes=1 << 30))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for t in range(traces):
        done = stage.begin()
        for span, parent in ((3, 2), (2, 1), (1, None)):  # a tool under an LLM call under an agent
            done.on_call(_call(t, span, parent), {"gen_ai": {"response": {"id": f"r{t}"}}})
        await stage.export_logs([LogRecord("gen_ai.choice", f"{t:032x}", f"{9:016x}", 0, {"message": "x" * 100}, "svc")])
        if t % 1000 == 0:
            await stage.expire()  # window 0: every record waiting is past it
        if (t + 1) % (traces // 5) == 0:
            used = tracemalloc.get_traced_memory()[0] - base
            print(f"{t + 1:>9,} traces: {used / 1e6:7.2f} MB traced, {stage.memory.spans:,} spans remembered, "
                  f"{stage.pending_bytes:,} bytes of records waiting")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().traces))
