"""Start-up of the CLI: `storyd --help` and `storyd validate` of the toy story, against their targets.

Each command runs as a fresh process (`python -m storyd`), five times; the row gives the
best wall time (the least disturbed by other work on the machine) and that run's CPU
time, and whether the best meets the target (issue 28: help under 0.3 s, validate under
1 s). Run alone: ``python -m bench.bench_cli``.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = (("storyd --help", ["--help"], 0.3), ("storyd validate stories/beach-day.yaml",
                                               ["validate", "stories/beach-day.yaml"], 1.0))
RUNS = 5


def _timed(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `python -m storyd ARGS`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "storyd", *args], cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def run() -> list[dict]:
    rows = []
    for case, args, target in CASES:
        _timed(args)  # warm the file cache and the tokenizer files
        wall, cpu = min(_timed(args) for _ in range(RUNS))
        rows.append({"bench": "cli", "case": case, "best_wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                     "target_s": target, "meets": "yes" if wall < target else "NO"})
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("storyd start-up", run())
