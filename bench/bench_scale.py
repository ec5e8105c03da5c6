"""Panels per minute on the CPU with 1 process and with 2 ranks under torchrun (issue 10).

A 16-panel, one-character story on the embedded model. One process uses both cores;
each of two ranks uses one (torchrun's default), so the ranks trade intra-op threads for
processes. Wall time includes process start and model load, as a user sees it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PANELS = 16


def _story(folder: Path) -> Path:
    actions = ["standing", "waving", "running", "sitting", "jumping"]
    settings = ["on the beach", "in a forest", "on a city street", "in a snowy field", "in a room"]
    lines = [f"  - Kid {actions[i % 5]} {settings[(i * 2) % 5]}\n" for i in range(PANELS)]
    path = folder / "scale.yaml"
    path.write_text("seed: 5\ncharacters:\n  Kid: a kid with red hair\npanels:\n" + "".join(lines))
    return path


def _timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def run() -> list[dict]:
    from storyd.plan.presets import default_preset_name

    model = default_preset_name()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        story = _story(Path(tmp))
        base = [sys.executable, "-m", "storyd", "comic", str(story), "--quiet", "--model", model]
        torchrun = [
            str(Path(sys.executable).parent / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            "29541",
            "-m",
            "storyd",
            "comic",
            str(story),
            "--quiet",
            "--model",
            model,
        ]
        env = dict(os.environ)
        cases = [("1 process, 2 threads", base, env), ("2 ranks (torchrun), 1 thread each", torchrun, env)]
        for label, cmd, case_env in cases:
            seconds = _timed([*cmd, "-o", str(Path(tmp) / label.split()[0])], case_env)
            rows.append(
                {
                    "model": model,
                    "case": label,
                    "panels": PANELS,
                    "seconds": f"{seconds:.1f}",
                    "panels/min": f"{PANELS * 60 / seconds:.1f}",
                }
            )
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("scale", run())
