"""Speech balloons: sizing, placement in a panel's upper area, and drawing.

`plan_bubbles` decides where balloons go (no pixels); `draw_bubble` draws one.
Placement keeps reading order by giving each balloon a top strictly below the
previous one's, sits each balloon toward its speaker's side, and never lets two
balloons' outer boxes overlap; when they do not fit, the lettering shrinks and
the usable area grows, step by step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image, ImageChops, ImageDraw

from storyd.layout.fonts import Lettering
from storyd.layout.geometry import Box
from storyd.layout.text import ELLIPSIS, TextBlock, fit_text, widest_word
from storyd.story.model import DialogueLine

SHOUT_STROKE = 0.045  # of the font size: shouted lettering is drawn bold
TEXT_COLOURS = {"whisper": (95, 95, 95)}
SUPERSAMPLE = 3  # balloons are drawn this many times larger, then scaled down: smooth edges


@dataclass(frozen=True)
class Bubble:
    kind: str  # one of DIALOGUE_KINDS
    body: Box  # the ellipse the text sits in
    outer: Box  # the body plus scallops or spikes: what must not overlap
    tip: tuple[int, int]  # where the tail points: toward the speaker
    block: TextBlock


def plan_bubbles(
    lines: Sequence[DialogueLine],
    characters: Sequence[str],
    panel: Box,
    lettering: Lettering,
    *,
    size: int,
    min_size: int,
    avoid: Box | None = None,
    rtl: bool = False,
) -> list[Bubble]:
    """Balloons for a panel's dialogue, in reading order. Lines that cannot fit at all are left out.

    All balloons of a panel share one lettering size where they can: a long line
    that had to shrink brings the others down to its size.
    """
    if not lines:
        return []
    targets = [speaker_position(line, i, len(lines), characters, rtl) for i, line in enumerate(lines)]
    placed: list[Bubble] = []
    for attempt in range(8):
        text_size = max(min_size, round(size * 0.88**attempt))
        reach = min(1.0, 0.55 + 0.08 * attempt)  # how far down the panel balloons may go
        placed = _place_all(lines, targets, panel, lettering, text_size, min_size, reach, avoid)
        if len(placed) == len(lines):
            break
    sizes = {bubble.block.font.size for bubble in placed if bubble.block.lines}
    if len(sizes) > 1:
        even = _place_all(lines, targets, panel, lettering, min(sizes), min_size, reach, avoid)
        if len(even) == len(placed):
            placed = even
    return placed


def speaker_position(line: DialogueLine, i: int, n: int, characters: Sequence[str], rtl: bool) -> float:
    """Where the speaker stands across the panel, 0 (left) to 1 (right).

    A `left`/`right` hint wins; else the speaker's place in the panel's character
    list (assumed to stand in reading order); else the line's place in the dialogue.
    """
    if line.tail == "left":
        return 0.2
    if line.tail == "right":
        return 0.8
    if line.speaker in characters and len(characters) > 1:
        k, count = characters.index(line.speaker), len(characters)
        pos = 0.2 + 0.6 * k / (count - 1)
    elif line.speaker in characters:
        pos = 0.5
    else:
        pos = (i + 0.5) / n if n > 1 else 0.35
    return 1 - pos if rtl else pos


def _place_all(lines, targets, panel, lettering, size, min_size, reach, avoid) -> list[Bubble]:
    pad = max(2, round(panel.w * 0.03))
    inner = panel.inset(pad)
    top = inner.y if avoid is None or avoid.y > panel.y + panel.h / 2 else avoid.bottom + pad
    bottom = inner.y + round(inner.h * reach)
    if avoid is not None and avoid.y > panel.y + panel.h / 2:
        bottom = min(bottom, avoid.y - pad)
    placed: list[Bubble] = []
    tails: list[Box] = []
    width_share = 0.62 if len(lines) == 1 else 0.5
    for line, target in zip(lines, targets, strict=True):
        prev_top = placed[-1].outer.y if placed else None
        room_top = top if prev_top is None else prev_top + max(2, round(placed[-1].outer.h * 0.25))
        if bottom - room_top < 8:
            break
        max_h = max(1, (bottom - top) * 0.45)
        block = fit_text(
            line.text,
            lettering,
            inner.w * width_share,
            max_h,
            max_size=size,
            min_size=min_size,
            stroke_ratio=SHOUT_STROKE if line.kind == "shout" else 0.0,
        )
        block = _rounder(block, line.text, lettering, max_h)
        body_w, body_h, extra = _body_size(block, line.kind, pad)
        best = _best_spot(
            body_w + 2 * extra,
            body_h + 2 * extra,
            inner,
            room_top,
            bottom,
            target,
            [b.outer for b in placed],
            tails,
            avoid,
        )
        if best is None:
            break
        outer = best
        body = outer.inset(extra)
        tip = _tail_tip(body, panel, target, line.kind)
        placed.append(Bubble(line.kind, body, outer, tip, block))
        tails.append(_bounds([(body.x + body.w // 2, body.bottom), tip]))
    return [_clear_tail(bubble, [b.outer for b in placed if b is not bubble]) for bubble in placed]


def _clear_tail(bubble: Bubble, others: list[Box]) -> Bubble:
    """Shorten a tail that would cross another balloon, so tails never run through lettering."""
    cx, cy = bubble.body.x + bubble.body.w / 2, bubble.body.y + bubble.body.h / 2
    tx, ty = bubble.tip

    def crosses(frac: float) -> bool:
        for k in range(5, 21):
            t = k / 20 * frac
            x, y = cx + (tx - cx) * t, cy + (ty - cy) * t
            if any(o.x <= x <= o.right and o.y <= y <= o.bottom for o in others):
                return True
        return False

    for frac in (1.0, 0.9, 0.8, 0.7, 0.6):
        if not crosses(frac):
            break
    return replace(bubble, tip=(round(cx + (tx - cx) * frac), round(cy + (ty - cy) * frac)))


def _rounder(block: TextBlock, text: str, lettering: Lettering, max_h: float) -> TextBlock:
    """Rewrap a long flat block narrower at the same size: balloons read best a few times wider than tall."""
    if not block.lines or block.width <= 3 * block.height:
        return block
    size = block.font.size
    narrower = fit_text(
        text,
        lettering,
        max(math.sqrt(block.width * block.height * 4), widest_word(text, block.font, block.stroke)),
        max_h,
        max_size=size,
        min_size=size,
        stroke_ratio=block.stroke / size,
    )
    fits = narrower.lines and narrower.width <= block.width and not narrower.lines[-1].endswith(ELLIPSIS)
    return narrower if fits and narrower.font.size == size else block


def _body_size(block: TextBlock, kind: str, pad: int) -> tuple[int, int, int]:
    """An ellipse around the text block's corners, with padding; plus room for scallops or spikes."""
    half_w = max(block.width, 1) / 2
    half_h = max(block.height, 1) / 2
    a = half_w * 1.25 + pad
    b = half_h / math.sqrt(1 - (half_w / (a - pad * 0.5)) ** 2) + pad
    w, h = math.ceil(2 * a), math.ceil(2 * b)
    extra = round(0.12 * min(w, h)) if kind in ("thought", "shout") else 0
    return w, h, extra


def _best_spot(w, h, inner: Box, top, bottom, target, placed: list[Box], tails: list[Box], avoid) -> Box | None:
    if w > inner.w or top + h > bottom:
        return None
    gap = max(2, round(inner.w * 0.015))
    want_cx = inner.x + target * inner.w
    best, best_cost = None, math.inf
    xs = _spread(inner.x, inner.right - w, 16)
    ys = _spread(top, bottom - h, 12)
    for y in ys:
        for x in xs:
            box = Box(int(x), int(y), w, h)
            padded = Box(box.x - gap, box.y - gap, w + 2 * gap, h + 2 * gap)
            if any(padded.overlaps(other) for other in placed) or (avoid is not None and padded.overlaps(avoid)):
                continue
            cost = (y - top) / inner.h + 0.9 * abs(x + w / 2 - want_cx) / inner.w
            cost += 0.6 * sum(box.overlaps(t) for t in tails)
            if cost < best_cost:
                best, best_cost = box, cost
    return best


def _spread(start: float, stop: float, n: int) -> list[int]:
    """`n` evenly spaced whole positions from `start` to `stop`, both included (halves round to even),
    computed as numpy's linspace does, so placements are unchanged without importing numpy."""
    step = (stop - start) / (n - 1)
    return [round(i * step + start) for i in range(n - 1)] + [round(stop)]


def _tail_tip(body: Box, panel: Box, target: float, kind: str) -> tuple[int, int]:
    cx = body.x + body.w / 2
    length = max(body.h * 0.45, panel.h * 0.07) * (1.2 if kind == "thought" else 1.0)
    want_x = panel.x + target * panel.w
    reach = body.w * 0.5 + length * 0.6
    x = min(max(want_x, cx - reach), cx + reach)
    margin = max(2, round(min(panel.w, panel.h) * 0.02))
    x = min(max(x, panel.x + margin), panel.right - margin)
    y = min(body.bottom + length, panel.bottom - margin)
    return round(x), round(max(y, body.y + body.h * 0.75))


def _bounds(points) -> Box:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return Box(min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)


def draw_bubble(
    page: Image.Image, bubble: Bubble, *, line: int, clip: Box | None = None, ink=(0, 0, 0), paper=(255, 255, 255)
) -> None:
    """Draw the balloon (one outlined union of body and tail, anti-aliased) and then its lettering.

    Nothing is drawn outside `clip` (the panel), not even the tip of a tail.
    """
    pad = line + 2
    area = _bounds([(bubble.outer.x, bubble.outer.y), (bubble.outer.right, bubble.outer.bottom), bubble.tip])
    area = Box(area.x - pad, area.y - pad, area.w + 2 * pad, area.h + 2 * pad)
    outline = _mask(bubble, area, grow=line)  # the shape grown by the line width ...
    fill = _mask(bubble, area, grow=0)  # ... with the shape itself painted over it leaves the outline
    if bubble.kind == "whisper":
        outline = _dashed(outline, fill, bubble, area, line)
    outline, fill = _shrink(outline, area), _shrink(fill, area)
    if clip is not None:
        window = Image.new("L", outline.size, 0)
        ImageDraw.Draw(window).rectangle(
            (clip.x - area.x, clip.y - area.y, clip.right - 1 - area.x, clip.bottom - 1 - area.y), fill=255
        )
        outline, fill = ImageChops.multiply(outline, window), ImageChops.multiply(fill, window)
    page.paste(ink, (area.x, area.y), outline)
    page.paste(paper, (area.x, area.y), fill)
    body = bubble.body
    bubble.block.draw(ImageDraw.Draw(page), body.x, body.y, body.w, body.h, fill=TEXT_COLOURS.get(bubble.kind, ink))


def _mask(bubble: Bubble, area: Box, grow: float) -> Image.Image:
    """The balloon's shape, grown by `grow` px, drawn at SUPERSAMPLE times the size of `area`."""
    k = SUPERSAMPLE
    mask = Image.new("L", (area.w * k, area.h * k), 0)
    draw = ImageDraw.Draw(mask)
    body, g = bubble.body, grow * k
    cx, cy = (body.x + body.w / 2 - area.x) * k, (body.y + body.h / 2 - area.y) * k
    a, b = body.w / 2 * k, body.h / 2 * k
    tip = ((bubble.tip[0] - area.x) * k, (bubble.tip[1] - area.y) * k)
    angle = math.atan2((tip[1] - cy) / b, (tip[0] - cx) / a)

    def disc(x: float, y: float, r: float) -> None:
        draw.ellipse((x - r - g, y - r - g, x + r + g, y + r + g), fill=255)

    def polygon(points) -> None:
        draw.polygon(points, fill=255)
        if g > 0:
            draw.line([*points, points[0]], fill=255, width=round(2 * g), joint="curve")
            for x, y in points:
                disc(x, y, 0)

    if bubble.kind == "thought":
        bump = max(2.0, (bubble.outer.w - body.w) / 2) * k
        count = max(8, math.ceil(math.pi * (a + b) / (bump * 1.4)))
        for n in range(count):
            t = 2 * math.pi * n / count
            disc(cx + a * math.cos(t), cy + b * math.sin(t), bump)
        draw.ellipse((cx - a - g, cy - b - g, cx + a + g, cy + b + g), fill=255)
        edge = (cx + a * math.cos(angle), cy + b * math.sin(angle))
        for frac, radius in ((0.3, 0.55), (0.62, 0.38), (0.92, 0.24)):
            x, y = (edge[i] + (tip[i] - edge[i]) * frac for i in (0, 1))
            disc(x, y, max(1.5 * k, bump * radius * 1.6))
        return mask
    if bubble.kind == "shout":
        spike = (bubble.outer.w - body.w) / 2 * k
        count = max(10, round(math.pi * (a + b) / max(6.0 * k, spike * 1.6)))
        points = []
        for n in range(2 * count):
            t = math.pi * n / count
            reach = spike if n % 2 == 0 else 0.0
            points.append((cx + (a + reach) * math.cos(t), cy + (b + reach) * math.sin(t)))
        polygon(points)
    else:
        draw.ellipse((cx - a - g, cy - b - g, cx + a + g, cy + b + g), fill=255)
    spread = 0.16 if bubble.kind == "shout" else 0.22
    base = [(cx + 0.8 * a * math.cos(angle + s), cy + 0.8 * b * math.sin(angle + s)) for s in (-spread, spread)]
    polygon([base[0], tip, base[1]])
    return mask


def _shrink(mask: Image.Image, area: Box) -> Image.Image:
    return mask.resize((area.w, area.h), Image.Resampling.BOX)


def _dashed(outline: Image.Image, fill: Image.Image, bubble: Bubble, area: Box, line: int) -> Image.Image:
    """Keep every other dash of the outline ring, dashes measured along the balloon's perimeter."""
    import numpy as np  # here: `storyd validate` lays pages out (without drawing) and needs no numpy

    k = SUPERSAMPLE
    ring = (np.asarray(outline) > 127) & (np.asarray(fill) < 128)
    ys, xs = np.mgrid[0 : ring.shape[0], 0 : ring.shape[1]]
    body = bubble.body
    cx, cy = (body.x + body.w / 2 - area.x) * k, (body.y + body.h / 2 - area.y) * k
    a, b = body.w / 2 * k, body.h / 2 * k
    radius = (a + b) / 2
    dash = max(6.0, line * 5.0) * k
    phase = np.floor((np.arctan2((ys - cy) / b, (xs - cx) / a) + math.pi) * radius / dash).astype(int)
    return Image.fromarray(((ring & (phase % 2 == 0)) * 255).astype(np.uint8), "L")
