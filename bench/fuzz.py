"""Long fuzzing run: the properties of tests/test_fuzz.py with many more, fresh random examples.

    python bench/fuzz.py [--examples 5000] [-k mapping]

CI runs the same tests with a few hundred fixed examples; this draws new ones each run (hypothesis
prints the seed and a reproduction blob for any failure). Servers bind 127.0.0.1 only and stop themselves.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per property (default 5000)")
    parser.add_argument("-k", dest="keyword", help="only the properties whose test name matches (pytest -k)")
    args = parser.parse_args()
    if args.examples <= 0:
        parser.error("--examples must be > 0")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"]
    if args.keyword:
        command += ["-k", args.keyword]
    env = {**os.environ, "OTEL_BRIDGE_FUZZ_EXAMPLES": str(args.examples)}
    started = time.monotonic()
    code = subprocess.call(command, cwd=REPO, env=env)
    print(f"fuzz: {args.examples} examples per property, {time.monotonic() - started:.0f} s, exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
