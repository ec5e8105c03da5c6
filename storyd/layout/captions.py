"""Narration boxes: a rectangle in a top or bottom corner of the panel, never outside it."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from storyd.layout.fonts import Lettering
from storyd.layout.geometry import Box
from storyd.layout.text import TextBlock, fit_text

CAPTION_FILL = (255, 244, 196)  # the pale yellow of a narration box


@dataclass(frozen=True)
class Caption:
    box: Box
    block: TextBlock
    pad: int


def plan_caption(
    text: str,
    panel: Box,
    lettering: Lettering,
    *,
    position: str,
    size: int,
    min_size: int,
    line: int,
    rtl: bool = False,
    max_height: float = 0.34,
) -> Caption | None:
    """A box sized to its text: at most the panel's width and `max_height` of its height."""
    inset = line  # the caption's border sits on the panel's border
    pad = max(2, round(size * 0.35))
    max_w = panel.w - 2 * inset - 2 * pad - 2 * line
    max_h = panel.h * max_height - 2 * pad - 2 * line
    if max_w < 4 or max_h < 4:
        return None
    block = fit_text(text, lettering, max_w, max_h, max_size=size, min_size=min_size)
    if not block.lines:
        return None
    w = block.width + 2 * pad + 2 * line
    h = block.height + 2 * pad + 2 * line
    x = panel.right - inset - w if rtl else panel.x + inset
    y = panel.y + inset if position == "top" else panel.bottom - inset - h
    return Caption(Box(x, y, w, h), block, pad)


def draw_caption(page: Image.Image, caption: Caption, *, line: int, ink=(0, 0, 0)) -> None:
    draw = ImageDraw.Draw(page)
    box = caption.box
    draw.rectangle((box.x, box.y, box.right - 1, box.bottom - 1), fill=CAPTION_FILL, outline=ink, width=line)
    inner = box.inset(line + caption.pad)
    caption.block.draw(draw, inner.x, inner.y, inner.w, inner.h, fill=ink)
