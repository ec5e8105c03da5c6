"""Lettering text: word wrapping, and shrinking text until it fits a box.

Sizes are measured from the glyphs' ink boxes as Pillow will draw them (not just
their advances), so a block that "fits" also draws inside its box.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from PIL import ImageDraw

from storyd.layout.fonts import Lettering, MixedFont

ELLIPSIS = "…"
# CJK text has no spaces: a line may break after any ideograph, kana or Hangul syllable (as after a
# hyphen, dash or slash in a long word), except before closing punctuation, which stays on its line.
_CJK = "\u2e80-\u2fff\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_CLOSING = "々、。，．！？：；）」』】〉》〕ー…,.!?:;)ゃゅょっャュョッぁぃぅぇぉァィゥェォ"
_BREAK_AFTER = re.compile(rf"(?<=[-–—/{_CJK}])(?=[^\s{_CLOSING}])")


@dataclass(frozen=True)
class TextBlock:
    """Wrapped lines at one font size; `width` x `height` is the ink box of all lines."""

    lines: tuple[str, ...]
    font: MixedFont
    stroke: int
    step: int  # baseline-to-baseline distance
    width: int
    height: int
    top: int  # ink top relative to the first line's ascender line (<= 0)
    line_extents: tuple[tuple[int, int], ...]  # (left, right) ink extent of each line

    def draw(self, draw: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float, fill) -> None:
        """Draw centred in the box (x, y, w, h), each line centred on its own."""
        top = round(y + (h - self.height) / 2) - self.top
        for i, (line, (left, right)) in enumerate(zip(self.lines, self.line_extents, strict=True)):
            lx = round(x + (w - (right - left)) / 2) - left
            self.font.draw(draw, (lx, top + i * self.step), line, fill=fill, stroke_width=self.stroke, stroke_fill=fill)


def _is_variation_selector(code: int) -> bool:
    return 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF


def clean(text: str) -> str:
    """Text Pillow can always lay out: NFC, tabs as spaces, no control or format characters (zero-width
    joiners, direction marks), variation selectors or lone surrogates."""
    out = []
    for ch in unicodedata.normalize("NFC", str(text).replace("\r\n", "\n")):
        category = unicodedata.category(ch)
        if ch == "\n":
            out.append(ch)
        elif ch in "\t\r\v\f":
            out.append(" ")
        elif category == "Cs":
            out.append("\ufffd")
        elif category not in ("Cc", "Cf", "Co", "Cn") and not _is_variation_selector(ord(ch)):
            out.append(ch)
    return "".join(out).strip()


def _extent(font, text: str, stroke: int) -> tuple[int, int, int, int]:
    if not text:
        return 0, 0, 0, 0
    left, top, right, bottom = font.getbbox(text, anchor="la", stroke_width=stroke)
    return min(left, 0), top, max(right, round(font.getlength(text)) + stroke), bottom


def line_width(font, text: str, stroke: int = 0) -> int:
    left, _, right, _ = _extent(font, text, stroke)
    return right - left


def wrap(text: str, font, max_width: float, stroke: int = 0) -> list[str]:
    """Greedy word wrap; a word wider than the line breaks after a hyphen, else between characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            for n, piece in enumerate(_BREAK_AFTER.split(word)):
                joined = piece if not line else line + ("" if n else " ") + piece
                if line_width(font, joined, stroke) <= max_width:
                    line = joined
                    continue
                if line:
                    lines.append(line)
                while line_width(font, piece, stroke) > max_width and len(piece) > 1:
                    cut = _longest_prefix(font, piece, max_width, stroke)
                    lines.append(piece[:cut])
                    piece = piece[cut:]
                line = piece
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _longest_prefix(font, word: str, max_width: float, stroke: int) -> int:
    lo, hi = 1, len(word) - 1  # at least one character per line, so wrapping always ends
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if line_width(font, word[:mid], stroke) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def measure(lines: list[str], font, stroke: int = 0, leading: float = 0.08) -> TextBlock:
    ascent, descent = font.getmetrics()
    step = max(1, round((ascent + descent) * (1 + leading)))
    top, bottom, width, extents = 0, 0, 0, []
    for i, line in enumerate(lines):
        left, t, right, b = _extent(font, line, stroke)
        extents.append((left, right))
        width = max(width, right - left)
        top = min(top, i * step + t)
        bottom = max(bottom, i * step + max(b, ascent + descent))
    return TextBlock(tuple(lines), font, stroke, step, width, bottom - top if lines else 0, top, tuple(extents))


def fit_text(
    text: str,
    lettering: Lettering,
    width: float,
    height: float,
    *,
    max_size: int,
    min_size: int = 6,
    stroke_ratio: float = 0.0,
    balance: bool = True,
) -> TextBlock:
    """The largest size (<= max_size) whose wrapped text fits width x height.

    Below `min_size` the text is cut with an ellipsis instead; a box too small for
    one line gets an empty block. The result never exceeds the box.
    """
    text = clean(text)
    min_size = max(1, min(min_size, max_size))

    def attempt(size: int, max_width: float) -> TextBlock:
        font = lettering.font(size)
        stroke = round(size * stroke_ratio)
        return measure(wrap(text, font, max_width, stroke), font, stroke)

    def fits(block: TextBlock) -> bool:
        """Inside the box, and no word split across lines (that is only allowed at the smallest size)."""
        return block.width <= width and block.height <= height and widest_word(text, block.font, block.stroke) <= width

    lo, hi = min_size, max(min_size, int(max_size))
    best = attempt(lo, width)
    if best.width > width or best.height > height:
        return _truncated(text, lettering.font(lo), width, height, round(lo * stroke_ratio))
    while lo < hi:  # binary search for the largest size that fits
        mid = (lo + hi + 1) // 2
        block = attempt(mid, width)
        if fits(block):
            lo, best = mid, block
        else:
            hi = mid - 1
    if balance and len(best.lines) > 1:
        floor = widest_word(text, best.font, best.stroke)
        best = _balanced(best, min(floor, width), width, lambda w: attempt(lo, w))
    return best


def widest_word(text: str, font, stroke: int = 0) -> int:
    """The widest piece `wrap` would rather not split: narrower lines break words."""
    pieces = (p for word in text.split() for p in _BREAK_AFTER.split(word))
    return max((line_width(font, p, stroke) for p in pieces), default=0)


def _balanced(block: TextBlock, floor: float, width: float, attempt) -> TextBlock:
    """The narrowest wrapping with no more lines: even lines, as a letterer sets a balloon."""
    lo, hi, best = max(width / 3, floor), width, block
    for _ in range(7):
        mid = (lo + hi) / 2
        candidate = attempt(mid)
        if len(candidate.lines) <= len(block.lines) and candidate.height <= block.height:
            hi, best = mid, candidate
        else:
            lo = mid
    return best


def _truncated(text: str, font, width: float, height: float, stroke: int) -> TextBlock:
    lines = wrap(text, font, width, stroke)
    while lines:
        block = measure(lines, font, stroke)
        if block.height <= height and block.width <= width:
            return block
        lines = lines[:-1]
        if lines:
            last = lines[-1]
            while last and line_width(font, last + ELLIPSIS, stroke) > width:
                last = last[:-1]
            lines[-1] = (last.rstrip() + ELLIPSIS) if last else ""
            if not lines[-1]:
                lines.pop()
    return measure([], font, stroke)
