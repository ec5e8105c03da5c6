"""Run every `bench/bench_*.py` module (or those named) and print each one's rows as a table.

Each module exposes `run() -> list[dict]`; rows of one module share their keys.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}\n")
    if not rows:
        print("(no rows)")
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[str(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")
    sys.stdout.flush()


def main(names: list[str]) -> None:
    here = Path(__file__).parent
    modules = sorted(p.stem for p in here.glob("bench_*.py"))
    chosen = [m for m in modules if not names or m.removeprefix("bench_") in names or m in names]
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        print_table(module.__doc__.strip().splitlines()[0] if module.__doc__ else name, module.run())


if __name__ == "__main__":
    main(sys.argv[1:])
