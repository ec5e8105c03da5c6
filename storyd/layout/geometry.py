"""Pure page geometry: panel spans and a page spec in, panel boxes per page out. No images.

A page is a stack of *tiers* (rows of the comic page). A tier is a row of *slots*;
a slot holds one panel, or several panels stacked top to bottom. Reading order is
tier by tier, slot by slot (right to left for manga), and top to bottom inside a
slot, so every panel is either above or before (left of, for manga right of) the
panels read after it. Slot widths are weights, so a tier with fewer panels than
columns widens them; a tier is one or two rows high, and a page with fewer rows
of panels than the template's ends early rather than stretching them.

Boxes are laid on a pitch of ``(length + gutter) / units``, so the gap between two
neighbouring boxes is exactly one gutter and the outer edges sit exactly on the
margins, whatever the rounding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from storyd.errors import InputError

SPAN_WIDTH = {"normal": 1, "tall": 1, "wide": 2, "large": 2}
SPAN_CELLS = {"normal": 1, "tall": 2, "wide": 2, "large": 4}  # grid cells a panel takes, for `auto`
STACKABLE = ("normal", "wide")
MIN_PANEL_PX = 24

# `classic` tier patterns: (kind, width) per slot; "S" is one panel, "P" a stacked pair.
CLASSIC_PATTERNS = (
    (("S", 1),),
    (("S", 1), ("S", 1)),
    (("S", 2), ("S", 1)),
    (("S", 1), ("S", 2)),
    (("S", 1), ("P", 1)),
    (("P", 1), ("S", 1)),
    (("S", 2), ("P", 1)),
    (("P", 1), ("S", 2)),
    (("S", 1), ("S", 1), ("S", 1)),
    (("S", 1), ("S", 1), ("P", 1)),
    (("S", 1), ("P", 1), ("S", 1)),
    (("P", 1), ("S", 1), ("S", 1)),
    (("P", 1), ("P", 1)),
)


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def overlaps(self, other: Box) -> bool:
        return self.x < other.right and other.x < self.right and self.y < other.bottom and other.y < self.bottom

    def inset(self, d: int) -> Box:
        return Box(self.x + d, self.y + d, max(0, self.w - 2 * d), max(0, self.h - 2 * d))


@dataclass(frozen=True)
class PanelBox:
    index: int  # the panel's position in the story
    box: Box


@dataclass(frozen=True)
class PageSpec:
    width: int
    height: int
    margin: int
    gutter: int
    footer: int = 0  # pixels kept free above the bottom margin (page numbers)

    @property
    def content(self) -> Box:
        return Box(self.margin, self.margin, self.width - 2 * self.margin, self.height - 2 * self.margin - self.footer)


@dataclass(frozen=True)
class PageLayout:
    width: int
    height: int
    panels: tuple[PanelBox, ...]  # in reading order
    rtl: bool = False


@dataclass(frozen=True)
class Slot:
    width: int
    panels: tuple[int, ...]  # stacked top to bottom


@dataclass(frozen=True)
class Tier:
    height: int
    slots: tuple[Slot, ...]


def plan_pages(
    spans: Sequence[str],
    spec: PageSpec,
    *,
    template: str = "auto",
    rows: int | None = None,
    columns: int | None = None,
    seed: int = 0,
    panel_aspect: float = 1.0,
) -> list[PageLayout]:
    """Flow panels (given by their spans, in story order) onto as many pages as they need.

    `grid` and `manga` use `rows` x `columns` (default 2 x 2); `auto` picks them from
    the panel count unless given; `classic` draws each tier's pattern from `seed`;
    `strip` is one row a page, and the page keeps its width but takes the row's height.
    """
    n = len(spans)
    for name, value in (("rows", rows), ("columns", columns)):
        if value is not None and value < 1:
            raise InputError(f"layout {name} must be at least 1, not {value}")
    content = spec.content
    if content.w < MIN_PANEL_PX or content.h < MIN_PANEL_PX:
        raise InputError(
            f"the page ({spec.width}x{spec.height} px) has no room inside its margins", hint="use a smaller margin"
        )
    if n == 0:
        return []
    rtl = template == "manga"
    if template == "strip":
        cols = columns or math.ceil(n / math.ceil(n / 4))
        spec = strip_spec(spec, cols, panel_aspect)
        rows = 1
        pages = grid_tiers(spans, rows, cols)
    elif template == "classic":
        rows = rows or 3
        pages = classic_tiers(spans, rows, seed)
    else:
        per_page = None
        if template == "auto" and rows is None and columns is None:
            rows, columns, per_page = choose_grid(sum(SPAN_CELLS[s] for s in spans), spec, panel_aspect)
        elif template == "auto":  # one of the two given: the other holds up to six panels a page
            rows = rows or math.ceil(min(n, 6) / columns)
            columns = columns or math.ceil(min(n, 6) / rows)
        rows = rows or 2
        pages = grid_tiers(spans, rows, columns or 2, per_page)
    return [PageLayout(spec.width, spec.height, place(tiers, spec, rows=rows, rtl=rtl), rtl) for tiers in pages]


def strip_spec(spec: PageSpec, cols: int, panel_aspect: float) -> PageSpec:
    """A strip keeps the page width and takes the height of one row of panels of the panels' aspect."""
    cell_w = (spec.width - 2 * spec.margin - (cols - 1) * spec.gutter) / cols
    height = 2 * spec.margin + spec.footer + max(MIN_PANEL_PX, round(cell_w / panel_aspect))
    return PageSpec(spec.width, height, spec.margin, spec.gutter, spec.footer)


def choose_grid(cells: int, spec: PageSpec, panel_aspect: float) -> tuple[int, int, int]:
    """Rows, columns and cells per page for `auto`: at most 6 cells a page, pages balanced
    (13 panels are 5 + 5 + 3, not 6 + 6 + 1), cells shaped like the panels."""
    per_page = math.ceil(cells / math.ceil(cells / 6))
    content = spec.content
    best: tuple[float, int, int] | None = None
    for rows in range(1, per_page + 1):
        for cols in range(1, min(per_page, 4) + 1):
            waste = rows * cols - per_page
            if waste < 0 or waste >= cols:  # too small, or a whole tier left empty
                continue
            cell_w = (content.w - (cols - 1) * spec.gutter) / cols
            cell_h = (content.h - (rows - 1) * spec.gutter) / rows
            if cell_w <= 0 or cell_h <= 0:
                continue
            score = abs(math.log(cell_w / cell_h / panel_aspect)) + 0.15 * waste
            if best is None or score < best[0]:
                best = (score, rows, cols)
    return (best[1], best[2], per_page) if best else (per_page, 1, per_page)


def grid_tiers(spans: Sequence[str], rows: int, cols: int, per_page: int | None = None) -> list[list[Tier]]:
    """Fill pages of `rows` x `cols` cells (panels taking at most `per_page` cells a page, see
    SPAN_CELLS); a tier with a tall or large panel is two rows high."""
    pages: list[list[Tier]] = [[]]
    used = 0
    i = 0
    end = len(spans) if per_page is None else _page_end(spans, 0, per_page)
    while i < len(spans):
        if used >= rows or i >= end:
            pages.append([])
            used = 0
            end = len(spans) if per_page is None else _page_end(spans, i, per_page)
        tier, i = _grid_tier(spans[:end], i, cols, rows - used)
        pages[-1].append(tier)
        used += tier.height
    return pages


def _page_end(spans: Sequence[str], start: int, cells: int) -> int:
    """One past the last panel from `start` that fits in `cells` cells (at least one panel)."""
    end, used = start, 0
    while end < len(spans) and (end == start or used + SPAN_CELLS[spans[end]] <= cells):
        used += SPAN_CELLS[spans[end]]
        end += 1
    return end


def _grid_tier(spans: Sequence[str], start: int, cols: int, room: int) -> tuple[Tier, int]:
    i, used, taken = start, 0, []
    while i < len(spans) and used < cols:
        width = min(SPAN_WIDTH[spans[i]], cols)
        if used + width > cols:
            break
        taken.append(i)
        used += width
        i += 1
    if room < 2 or all(spans[j] in STACKABLE for j in taken):
        return Tier(1, tuple(Slot(min(SPAN_WIDTH[spans[j]], cols), (j,)) for j in taken)), i
    return _double_tier(spans, start, cols)


def _double_tier(spans: Sequence[str], start: int, cols: int) -> tuple[Tier, int]:
    """Two rows high: tall and large panels fill the height, the others stack in pairs beside them."""
    i, used, slots = start, 0, []
    while i < len(spans) and used < cols:
        width = min(SPAN_WIDTH[spans[i]], cols)
        if used + width > cols:
            break
        group = [i]
        if spans[i] in STACKABLE and i + 1 < len(spans) and spans[i + 1] in STACKABLE:
            pair_width = max(width, min(SPAN_WIDTH[spans[i + 1]], cols))
            if used + pair_width <= cols:
                group.append(i + 1)
                width = pair_width
        slots.append(Slot(width, tuple(group)))
        used += width
        i += len(group)
    return Tier(2, tuple(slots)), i


def classic_tiers(spans: Sequence[str], rows: int, seed: int) -> list[list[Tier]]:
    """Tiers mixing single panels and stacked pairs, patterns drawn from a seeded generator."""
    rng = random.Random(seed)
    pages: list[list[Tier]] = [[]]
    used = 0
    i = 0
    while i < len(spans):
        if used >= rows:
            pages.append([])
            used = 0
        pattern = rng.choice(_classic_choices(len(spans) - i, rows - used))
        slots = []
        height = 1
        for kind, width in pattern:
            if i >= len(spans):
                break
            span = spans[i]
            if kind == "P" and span == "normal" and i + 1 < len(spans) and spans[i + 1] == "normal":
                slots.append(Slot(width, (i, i + 1)))
                i += 2
                continue
            if span == "large" and rows - used >= 2:
                height = 2
            slots.append(Slot(max(width, SPAN_WIDTH[span]), (i,)))
            i += 1
        pages[-1].append(Tier(height, tuple(slots)))
        used += height
    return pages


def _classic_choices(remaining: int, tiers_left: int) -> list[tuple[tuple[str, int], ...]]:
    """Dense tiers (3-4 panels) while panels abound; near the end, spread what is left over the
    page's remaining tiers so that the last page is not left half empty."""
    want = remaining / tiers_left
    sizes = (3, 4) if want >= 3 else (max(1, math.ceil(want)),)
    return [p for p in CLASSIC_PATTERNS if sum(2 if kind == "P" else 1 for kind, _ in p) in sizes]


def place(tiers: Sequence[Tier], spec: PageSpec, *, rows: int = 1, rtl: bool = False) -> tuple[PanelBox, ...]:
    """Turn one page of tiers into pixel boxes, in reading order.

    Tiers keep the height of a full page of `rows` rows: a short last page ends
    early rather than stretching its panels.
    """
    content, gutter = spec.content, spec.gutter
    boxes = []
    heights = [t.height for t in tiers]
    rest = rows - sum(heights)
    tier_ranges = _spans(content.y, content.h, gutter, heights + [rest] if rest > 0 else heights)
    for tier, (y0, y1) in zip(tiers, tier_ranges[: len(tiers)], strict=True):
        slot_ranges = _spans(content.x, content.w, gutter, [s.width for s in tier.slots])
        for slot, (x0, x1) in zip(tier.slots, slot_ranges, strict=True):
            if rtl:
                x0, x1 = content.x + content.right - x1, content.x + content.right - x0
            for index, (top, bottom) in zip(
                slot.panels, _spans(y0, y1 - y0, gutter, [1] * len(slot.panels)), strict=True
            ):
                box = Box(x0, top, x1 - x0, bottom - top)
                if box.w < MIN_PANEL_PX or box.h < MIN_PANEL_PX:
                    raise InputError(
                        f"panel {index + 1} would be only {box.w}x{box.h} px on a {spec.width}x{spec.height} px page",
                        hint="use fewer rows or columns, a smaller margin or gutter, or a larger page or dpi",
                    )
                boxes.append(PanelBox(index, box))
    return tuple(boxes)


def _spans(start: int, length: int, gutter: int, weights: Sequence[int]) -> list[tuple[int, int]]:
    """Split [start, start+length) into ranges proportional to `weights`, one gutter between neighbours."""
    pitch = (length + gutter) / sum(weights)
    out, acc = [], 0
    for weight in weights:
        lo = start + round(acc * pitch)
        acc += weight
        out.append((lo, start + round(acc * pitch) - gutter))
    return out
