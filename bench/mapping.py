"""The mapping alone, ours against Weave's own converter, on the spans bench/e2e.py sends.

    python bench/mapping.py [--seconds 5] [--weave-python /tmp/weavevenv/bin/python]

Ours: map_request (decode the request's bytes, map, serialize each call to JSON) over the serialized
requests, as the receiver hands them over; with the C decoder when it is built (the output says which).
Weave's: bench/weave_speed.py in Weave's interpreter, same requests. Both count spans per second of
their process's CPU time (time.process_time), not of the clock: on a shared machine the clock also counts
the time other processes held the core, which made the ratio swing from 4.6x to 9.8x in four runs.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def ours_spans_per_second(payloads: list[bytes], seconds: float) -> float:
    from otel_bridge.config import Mapping
    from otel_bridge.pipeline import Mapper

    # As a bridge with the default mapping: section maps them, redaction and limits included.
    mapper = Mapper.from_config(Mapping())
    options = {"header_project": None, "default_project": ""}
    mapper.map(payloads[0], **options)  # warm-up
    spans, i = 0, 0
    started = time.process_time()
    while True:
        spans += mapper.map(payloads[i % len(payloads)], **options).accepted
        i += 1
        elapsed = time.process_time() - started
        if elapsed >= seconds:
            return spans / elapsed


def weave_spans_per_second(payloads: list[bytes], seconds: float, weave_python: str) -> tuple[float, str]:
    """Weave's converter on the same requests, in its own interpreter (weave pins its own dependencies)."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as file:
        file.write(b"".join(struct.pack("<I", len(p)) + p for p in payloads))
        file.flush()
        done = subprocess.run(
            [weave_python, str(BENCH / "weave_speed.py"), file.name, str(seconds)],
            capture_output=True, text=True, timeout=seconds + 120, check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"Weave's converter failed: {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout)
    return result["spans"] / result["seconds"], result["weave_version"]


def compare(payloads: list[bytes], seconds: float, weave_python: str | None) -> dict:
    """{"mapping_spans_per_s", "mapping_decoder", "weave_spans_per_s", "weave_version", "mapping_over_weave"};
    mapping_decoder is "native" (the C extension) or "python"; Weave's figures are None without its interpreter."""
    from otel_bridge.decode import NATIVE

    ours = ours_spans_per_second(payloads, seconds)
    result = {
        "mapping_spans_per_s": round(ours),
        "mapping_decoder": "native" if NATIVE else "python",
        "weave_spans_per_s": None,
        "weave_version": None,
        "mapping_over_weave": None,
    }
    if weave_python:
        theirs, version = weave_spans_per_second(payloads, seconds, weave_python)
        result.update(weave_spans_per_s=round(theirs), weave_version=version, mapping_over_weave=round(ours / theirs, 1))
    return result


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
