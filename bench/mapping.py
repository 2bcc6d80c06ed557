"""The mapping alone, ours against Weave's own converter, on the spans bench/e2e.py sends.

    python bench/mapping.py [--seconds 5] [--weave-python /tmp/weavevenv/bin/python]

Ours: map_request (decode the request's bytes, map, serialize each call to JSON) over the serialized
requests, as the receiver hands them over; with the C decoder when it is built (the output says which).
Weave's: bench/weave_speed.py in Weave's interpreter, same requests. Both count spans per second of
their process's CPU time (time.process_time), not of the clock: on a shared machine the clock also counts
the time other processes held the core. CPU time still moves with the neighbours (caches, clock speed):
run one side after the other and the ratio swung from 6.5x to 12.1x in three runs. So the two take turns
in short slices, and the ratio is the median of the slices' ratios: a slow spell of the machine moves a
slice pair, not one side of the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SLICES = 10


def ours(payloads: list[bytes]) -> Callable[[float], tuple[int, float]]:
    """A slice of our mapping: (spans, CPU seconds) for at least the seconds asked."""
    from otel_bridge.config import Mapping
    from otel_bridge.pipeline import Mapper

    # As a bridge with the default mapping: section maps them, redaction and limits included.
    mapper = Mapper.from_config(Mapping())
    options = {"header_project": None, "default_project": ""}
    mapper.map(payloads[0], **options)  # warm-up
    position = 0

    def run(seconds: float) -> tuple[int, float]:
        nonlocal position
        spans = 0
        started = time.process_time()
        while True:
            spans += mapper.map(payloads[position % len(payloads)], **options).accepted
            position += 1
            elapsed = time.process_time() - started
            if elapsed >= seconds:
                return spans, elapsed

    return run


class WeaveConverter:
    """Weave's converter on the same requests, in its own interpreter (weave pins its own dependencies),
    converting for as long as asked, slice by slice."""

    def __init__(self, payloads: list[bytes], weave_python: str) -> None:
        self._file = tempfile.NamedTemporaryFile(suffix=".bin")
        self._file.write(b"".join(struct.pack("<I", len(p)) + p for p in payloads))
        self._file.flush()
        self._process = subprocess.Popen(
            [weave_python, str(BENCH / "weave_speed.py"), self._file.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.version = self._answer()["weave_version"]

    def _answer(self) -> dict:
        line = self._process.stdout.readline()
        if not line:
            self._process.wait(timeout=30)
            raise RuntimeError(f"Weave's converter failed: {self._process.stderr.read().strip()[-500:]}")
        return json.loads(line)

    def run(self, seconds: float) -> tuple[int, float]:
        self._process.stdin.write(f"{seconds}\n")
        self._process.stdin.flush()
        answer = self._answer()
        return answer["spans"], answer["seconds"]

    def close(self) -> None:
        self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._file.close()


def compare(payloads: list[bytes], seconds: float, weave_python: str | None) -> dict:
    """{"mapping_spans_per_s", "mapping_decoder", "weave_spans_per_s", "weave_version", "mapping_over_weave",
    "mapping_over_weave_range"}: each side maps for `seconds` of CPU time in all, in SLICES turns; the
    ratio is the median of the turns' ratios, the range their lowest and highest. mapping_decoder is
    "native" (the C extension) or "python"; Weave's figures are None without its interpreter."""
    from otel_bridge.decode import NATIVE

    ours_slice = ours(payloads)
    result: dict = {
        "mapping_decoder": "native" if NATIVE else "python",
        "weave_spans_per_s": None,
        "weave_version": None,
        "mapping_over_weave": None,
        "mapping_over_weave_range": None,
    }
    if not weave_python:
        spans, elapsed = ours_slice(seconds)
        return {"mapping_spans_per_s": round(spans / elapsed), **result}
    weave = WeaveConverter(payloads, weave_python)
    try:
        turns = [(ours_slice(seconds / SLICES), weave.run(seconds / SLICES)) for _ in range(SLICES)]
    finally:
        weave.close()
    ratios = sorted((s / e) / (ws / we) for (s, e), (ws, we) in turns)
    ours_total = sum(s for (s, _), _ in turns) / sum(e for (_, e), _ in turns)
    weave_total = sum(s for _, (s, _) in turns) / sum(e for _, (_, e) in turns)
    result.update(
        weave_spans_per_s=round(weave_total),
        weave_version=weave.version,
        mapping_over_weave=round(statistics.median(ratios), 1),
        mapping_over_weave_range=[round(ratios[0], 1), round(ratios[-1], 1)],
    )
    return {"mapping_spans_per_s": round(ours_total), **result}


def default_weave_python() -> str | None:
    """WEAVE_PYTHON, else the .venv-weave that .ci/run makes, else none."""
    candidate = os.environ.get("WEAVE_PYTHON") or str(BENCH.parent / ".venv-weave" / "bin" / "python")
    return candidate if Path(candidate).exists() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each side converts (default 5)")
    parser.add_argument("--spans-per-request", type=int, default=512)
    parser.add_argument("--distinct", type=int, default=4, help="distinct requests, converted round-robin (default 4)")
    parser.add_argument("--weave-python", default=default_weave_python(), help="interpreter with weave==0.53.12 (default: $WEAVE_PYTHON, else .venv-weave)")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    from e2e import build_requests  # the spans bench/e2e.py sends

    result = compare(build_requests(args.distinct, args.spans_per_request), args.seconds, args.weave_python)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
