"""Real-world lengths, page presets and colours, turned into pixels at a DPI."""

from __future__ import annotations

import re

from PIL import ImageColor

from storyd.errors import InputError

PER_INCH = {"in": 1.0, "mm": 25.4, "cm": 2.54, "pt": 72.0}
LENGTH_UNITS = ("mm", "cm", "in", "pt", "px")

# Width x height in inches; "comic" is the US comic-book trim size.
PAGE_SIZES_IN = {
    "a4": (210 / 25.4, 297 / 25.4),
    "letter": (8.5, 11.0),
    "comic": (6.625, 10.25),
    "square": (8.0, 8.0),
}

# Pages are drawn whole in memory, 3 bytes a pixel: A4 at 1200 dpi (140 megapixels) is the most storyd draws.
MAX_PAGE_SIDE_PX = 20_000
MAX_PAGE_PIXELS = 150_000_000

_LENGTH = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")
_PAGE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*[x×]\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*$")


def to_pixels(value: float, unit: str, dpi: int) -> float:
    if unit == "px":
        return value
    return value / PER_INCH[unit] * dpi


def _pixels(number: str, unit: str, dpi: int, what: str) -> int:
    """A length in whole pixels; one no page could hold (hundreds of digits read as infinity) is refused."""
    value = to_pixels(float(number), unit, dpi)
    if not value < 10**9:
        raise InputError(f"{what} is far too large", hint="write a length that fits on a page, e.g. '10mm'")
    return round(value)


def length_px(text: str, dpi: int, *, field: str = "length") -> int:
    """``"4mm"`` at 150 dpi -> 24. A bare number is refused: the unit is what makes it unambiguous."""
    match = _LENGTH.match(str(text).lower())
    unit = match.group(2) if match else ""
    if not match or unit not in LENGTH_UNITS:
        raise InputError(
            f"layout {field} {text!r} is not a length",
            hint=f"write a number and a unit, one of {', '.join(LENGTH_UNITS)}, e.g. '4mm'",
        )
    return _pixels(match.group(1), unit, dpi, f"layout {field} {text!r}")


def page_px(page: str, dpi: int) -> tuple[int, int]:
    """A preset name or ``"WxH<unit>"`` -> (width, height) in pixels."""
    key = str(page).strip().lower()
    if key in PAGE_SIZES_IN:
        w, h = PAGE_SIZES_IN[key]
        return round(w * dpi), round(h * dpi)
    match = _PAGE.match(key)
    if not match or match.group(3) not in LENGTH_UNITS:
        raise InputError(
            f"layout page {page!r} is neither a preset nor a size",
            hint=f"use one of {', '.join(PAGE_SIZES_IN)}, or e.g. '1200x1800px' or '6x9in'",
        )
    unit = match.group(3)
    w, h = (_pixels(match.group(i), unit, dpi, f"layout page {page!r}") for i in (1, 2))
    if w < 64 or h < 64:
        raise InputError(
            f"layout page {page!r} is too small ({w}x{h} px at {dpi} dpi)", hint="make it at least 64 px a side"
        )
    check_page_pixels(w, h, f"layout page {page!r}", dpi)
    return w, h


def check_page_pixels(w: int, h: int, what: str, dpi: int) -> None:
    """Refuse a page too large to draw in memory (see MAX_PAGE_PIXELS)."""
    if max(w, h) > MAX_PAGE_SIDE_PX or w * h > MAX_PAGE_PIXELS:
        raise InputError(
            f"{what} is {w}x{h} px at {dpi} dpi, too large to draw: pages are drawn in memory, "
            f"so storyd draws at most {MAX_PAGE_SIDE_PX} px a side and {MAX_PAGE_PIXELS // 1_000_000} megapixels",
            hint="use a smaller page or a lower dpi",
        )


def color(text: str, *, field: str = "colour") -> tuple[int, int, int]:
    try:
        return ImageColor.getrgb(str(text))[:3]
    except ValueError:
        raise InputError(
            f"layout {field} {text!r} is not a colour",
            hint="use a name such as 'black' or a hex value such as '#1a1a1a'",
        ) from None
