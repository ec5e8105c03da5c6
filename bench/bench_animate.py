"""Seconds per generated frame of each `storyd animate` backend on the CPU, at fixed tiny sizes.

Rows: the interpolate backend at 256 and 512 px (rendering only, then rendering plus
H.264 encoding); the animatediff backend (32x32) and both Wan backends (48x32) on their tiny
random models (so they measure each pipeline's overhead at a fixed size, not the real models'
speed: regressions show, real timings are in docs/animate.md). Run alone: ``python -m bench.bench_animate``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES = 16  # per transition, as the CLI's default


def _keyframes(side: int) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(0)
    noise = rng.random((side // 8, side // 8, 3)) * 255
    a = Image.fromarray(noise.astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    b = Image.fromarray(np.roll(np.asarray(a), (side // 16, side // 10), axis=(0, 1)))
    return a, b


def _row(case: str, frames: int, seconds: float) -> dict:
    return {"bench": "animate", "case": case, "frames": frames, "seconds": round(seconds, 3),
            "fps": round(frames / seconds, 2), "s_per_frame": round(seconds / frames, 4)}


def _interpolate_rows(side: int) -> list[dict]:
    from storyd.animate.interpolate import InterpolateBackend
    from storyd.animate.video import write_mp4

    a, b = _keyframes(side)
    backend = InterpolateBackend()
    backend.render(a, b, 3)  # warm-up (OpenCV init)
    started = time.perf_counter()
    frames = backend.render(a, b, FRAMES)
    render = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_mp4(Path(tmp) / "clip.mp4", frames, fps=12)
        encode = time.perf_counter() - started
    return [
        _row(f"interpolate {side}px render", FRAMES, render),
        _row(f"interpolate {side}px render+mp4", FRAMES, render + encode),
    ]


def _animatediff_row(steps: int = 4) -> dict:
    import torch

    from storyd.animate.backends.tiny_animatediff import tiny_animatediff_backend

    backend = tiny_animatediff_backend(steps=steps)  # with classifier-free guidance, as the real one runs
    a, b = (image.resize((32, 32)) for image in _keyframes(64))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threading only adds contention on a shared 2-core machine
    try:
        with torch.inference_mode():
            backend.render(a, b, 4)  # warm-up
            started = time.perf_counter()
            backend.render(a, b, FRAMES)
    finally:
        torch.set_num_threads(threads)
    return _row(f"animatediff tiny 32x32 {steps} steps (1 thread)", FRAMES, time.perf_counter() - started)


def _wan_row(kind: str, steps: int = 4) -> dict:
    import torch

    from storyd.animate.backends.tiny_wan import tiny_wan_model, tiny_wan_pipeline
    from storyd.animate.backends.wan import WanBackend

    name = {"flf2v": "wan2.1-flf2v-14b", "vace": "wan2.1-vace-1.3b"}[kind]
    backend = WanBackend(tiny_wan_pipeline(kind), tiny_wan_model(name), kind, steps=steps, guidance_scale=1.0,
                         max_sequence_length=16)
    a, b = (image.resize((48, 32)) for image in _keyframes(64))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            backend.render(a, b, 5)  # warm-up
            started = time.perf_counter()
            frames = len(backend.render(a, b, FRAMES))  # 16 asked, 17 (4k+1) generated
    finally:
        torch.set_num_threads(threads)
    return _row(f"wan-{kind} tiny 48x32 {steps} steps (1 thread)", frames, time.perf_counter() - started)


def run() -> list[dict]:
    return [*_interpolate_rows(256), *_interpolate_rows(512), _animatediff_row(), _wan_row("flf2v"), _wan_row("vace")]


def _print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    _print_table(run())
