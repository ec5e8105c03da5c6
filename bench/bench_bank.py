"""Character bank placements: peak host memory and time of the bank alone, in host memory and on disk.

Two characters' banks with SDXL's up-block layers at 512x512 (two reference panels, sampling
rate 0.5, both guidance halves, fp16) over 10 steps, nine kept after warm-up: about 1 GB, a
quarter-size stand-in for the lighthouse story's 15 GB. Each placement runs in a fresh
process: it writes both banks as CSA's write batches do (one character, step by step, layer
by layer), then reads every step of both as a read batch does. "peak MB" is the RSS
high-water mark (`ru_maxrss`) less the RSS before the first write; "plan MB" is what the
plan's footprint counts for the banks (all of them in memory; two steps on disk). Panels are
identical either way (tests/test_bank_store.py); this measures the memory and what it costs.
"""

from __future__ import annotations

import json
import subprocess
import sys

SIZE, STEPS, WARMUP, CHARACTERS = 512, 10, 1, ("Ada", "Pip")
PLACEMENTS = ("cpu", "disk")


def layer_shapes() -> list[tuple[int, int, int]]:
    """(halves, tokens, channels) of each up-block self-attention layer's bank entry."""
    from storyd.plan.estimate import attention_layout, unet_config
    from storyd.plan.presets import PRESETS

    shapes = []
    for block, factor, channels, count in attention_layout(unet_config(PRESETS["sdxl"])):
        if block == "up":
            tokens = ((SIZE // 8) >> factor) ** 2
            shapes += [(2, 2 * round(0.5 * tokens), channels)] * count
    return shapes


def measure(storage: str) -> dict:
    import resource
    import tempfile
    import time

    import psutil
    import torch

    from storyd.csa.bank import CharacterBank

    shapes = layer_shapes()
    step_bytes = sum(h * t * c * 2 for h, t, c in shapes) * len(CHARACTERS)
    before = psutil.Process().memory_info().rss
    with tempfile.TemporaryDirectory() as spill, CharacterBank(storage, spill_dir=spill) as bank:
        started = time.perf_counter()
        for character in CHARACTERS:
            bank.flush()  # a batch begins
            for step in range(WARMUP, STEPS):
                for i, shape in enumerate(shapes):
                    bank.write(character, f"up.{i}", step, torch.full(shape, float(step), dtype=torch.float16))
        bank.flush()
        written = time.perf_counter() - started
        started = time.perf_counter()
        for step in range(WARMUP, STEPS):
            view = bank.step_tensors(list(CHARACTERS), step, "cpu")
            assert all(float(t[0, 0, 0]) == step for t in view.values()), "a step came back wrong"
            del view
        read = time.perf_counter() - started
        total = bank.nbytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    planned = total if storage == "cpu" else 2 * step_bytes
    return {"bank": "host" if storage == "cpu" else storage, "bank MB": round(total / 1e6),
            "peak MB": round(peak / 1e6), "plan MB": round(planned / 1e6),
            "write s": round(written, 2), "read s": round(read, 2)}


def run() -> list[dict]:
    rows = []
    for storage in PLACEMENTS:
        out = subprocess.run([sys.executable, "-c", f"import json, bench.bench_bank as b; "
                              f"print(json.dumps(b.measure({storage!r})))"],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows
