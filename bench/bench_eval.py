"""Cost of `storyd eval`'s own steps on the CPU (the encoders' cost is the models').

Rows: the background mask per image at three sizes, the pinned preprocessing
(resize and crop to 224 px) per image, and the bootstrap interval over 30 and 300
stories. Run alone: ``python -m bench.bench_eval``.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image


def _image(side: int) -> Image.Image:
    pixels = np.full((side, side, 3), (120, 180, 230), dtype=np.uint8)
    pixels[side // 3: 2 * side // 3, side // 3: 2 * side // 3] = (200, 40, 40)
    return Image.fromarray(pixels)


def _timed(fn, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1000.0


def run() -> list[dict]:
    from storyd.eval import protocol
    from storyd.eval.images import mask_background, to_tensor
    from storyd.eval.stats import bootstrap

    to_tensor([_image(64)], 224, protocol.CLIP_MEAN, protocol.CLIP_STD)  # warm-up: importing torch is not the cost
    rows = []
    for side in (64, 512, 1024):
        image = _image(side)
        mask_ms = _timed(lambda im=image: mask_background(im), 5)
        prep_ms = _timed(lambda im=image: to_tensor([im], 224, protocol.CLIP_MEAN, protocol.CLIP_STD), 5)
        rows.append({"bench": "eval", "case": f"mask {side} px", "ms": round(mask_ms, 2)})
        rows.append({"bench": "eval", "case": f"preprocess {side} px -> 224", "ms": round(prep_ms, 2)})
    for stories in (30, 300):
        values = np.random.default_rng(0).random(stories).tolist()
        ms = _timed(lambda v=values: bootstrap(v), 3)
        rows.append({"bench": "eval", "case": f"bootstrap {stories} stories", "ms": round(ms, 2)})
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("storyd eval", run())
