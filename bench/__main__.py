"""Run the benchmarks one after another: ``make bench`` (all) or ``make bench BENCH=robot_latency`` (one).

Each is a script of its own (``bench/<name>.py``, see its docstring and docs/benchmarks.md); this runner only
starts them in turn with their default arguments and reports which failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def main(names: list[str]) -> int:
    chosen = names or available()
    unknown = [name for name in chosen if name not in available()]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        print(f"=== bench/{name}.py", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"=== bench/{name}.py exited {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
