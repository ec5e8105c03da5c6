"""Run every `bench/bench_*.py` module (or those named) and print each one's rows as a table.

Each module exposes `run() -> list[dict]`; rows of one module share their keys.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def format_table(title: str, rows: list[dict]) -> str:
    """The rows as a Markdown table under a `## title` heading."""
    if not rows:
        return f"\n## {title}\n\n(no rows)\n"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[str(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |" for c in cells]
    return f"\n## {title}\n\n" + "\n".join(lines) + "\n"


def print_table(title: str, rows: list[dict]) -> None:
    print(format_table(title, rows), end="")
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
