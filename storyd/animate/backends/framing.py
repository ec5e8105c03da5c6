"""Keyframes to a model's native size and back: letterbox (keep the whole panel) or crop.

A model renders about ``area`` pixels with sides divisible by ``multiple`` and an aspect
inside the range it was trained on. A panel whose aspect is inside that range is only
scaled. One outside it is either letterboxed (scaled to fit, black bars) or cropped
(scaled to cover, centre kept) at the nearest trained aspect. Coming back, the panel's
region of each frame is cut out and scaled to the comic's size, so the MP4 has the comic's
aspect either way (after a crop it shows the centre of the panel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from storyd.animate.backends.registry import NativeSize
from storyd.animate.frames import fit_image
from storyd.errors import InputError

FITS = ("letterbox", "crop")


@dataclass(frozen=True)
class Framing:
    size: tuple[int, int]  # (width, height) the model renders
    box: tuple[int, int, int, int]  # (left, top, right, bottom): where the panel lies in a rendered frame
    fit: str


def plan_framing(source: tuple[int, int], native: NativeSize, fit: str = "letterbox") -> Framing:
    """The render size for a panel of ``source`` (width, height), and where the panel sits in it."""
    if fit not in FITS:
        raise InputError(f"unknown fit '{fit}'", f"use one of: {', '.join(FITS)}")
    aspect = source[0] / source[1]
    trained = min(max(aspect, native.min_aspect), native.max_aspect)
    m = native.multiple
    width = max(m, int(math.sqrt(native.area * trained)) // m * m)
    height = max(m, int(math.sqrt(native.area / trained)) // m * m)
    box = (0, 0, width, height)
    if fit == "letterbox" and trained != aspect:
        if aspect > trained:  # wider than the model takes: bars above and below
            inner = max(1, round(width / aspect))
            box = (0, (height - inner) // 2, width, (height - inner) // 2 + inner)
        else:
            inner = max(1, round(height * aspect))
            box = ((width - inner) // 2, 0, (width - inner) // 2 + inner, height)
    return Framing((width, height), box, fit)


def to_native(image: Image.Image, framing: Framing) -> Image.Image:
    """The keyframe as the model takes it."""
    if framing.fit == "crop":
        return fit_image(image.convert("RGB"), framing.size)
    left, top, right, bottom = framing.box
    canvas = Image.new("RGB", framing.size)
    canvas.paste(image.convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS), (left, top))
    return canvas


def from_native(frames: list[np.ndarray], framing: Framing, size: tuple[int, int]) -> list[np.ndarray]:
    """Rendered frames back to ``size`` (the comic's), cut to the panel's region first."""
    left, top, right, bottom = framing.box
    out = []
    for frame in frames:
        region = Image.fromarray(frame[top:bottom, left:right])
        out.append(np.asarray(fit_image(region, size) if region.size != size else region))
    return out
