"""Typefaces for lettering: the packaged comic font, a user's font, Pillow's default, and
fallbacks for scripts the main face lacks (the comic font has no CJK, for example).

A text is lettered in one face: the main one, unless a fallback covers more of its
characters. Coverage comes from each font's `cmap` table, read once per face.
"""

from __future__ import annotations

import bisect
import mmap
import struct
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from PIL import ImageFont

from storyd.errors import InputError

# Fonts from Debian packages, used only where installed:
# fonts-dejavu-core, fonts-noto-cjk, fonts-wqy-zenhei, fonts-droid-fallback.
SYSTEM_FALLBACKS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
)


def packaged_font() -> Path | None:
    """The comic-lettering font from the `font-intuitive` package (SIL OFL 1.1), if installed."""
    try:
        path = resources.files("font_intuitive") / "files" / "Intuitive.ttf"
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


class Lettering:
    """One typeface at any size: a named .ttf/.otf, else the packaged font, else Pillow's default;
    plus fallback faces for characters the main face lacks."""

    def __init__(
        self, path: Path | None = None, *, packaged: bool = True, fallbacks: Sequence[Path] = SYSTEM_FALLBACKS
    ) -> None:
        self.path = Path(path) if path is not None else (packaged_font() if packaged else None)
        self.fallbacks = tuple(p for p in fallbacks if p.is_file() and p != self.path)
        self._fonts: dict[tuple[Path | None, int], ImageFont.FreeTypeFont] = {}
        self._coverage: dict[Path, list[tuple[int, int]] | None] = {}
        if path is not None:
            try:
                self.font(12)
            except OSError:
                raise InputError(
                    f"can't read the font {path}", hint="name a .ttf or .otf file, or leave `font` out", path=path
                ) from None

    def font(self, size: int, face: Path | None = None) -> ImageFont.FreeTypeFont:
        face = face or self.path
        key = (face, max(1, int(size)))
        if key not in self._fonts:
            self._fonts[key] = ImageFont.load_default(key[1]) if face is None else ImageFont.truetype(str(face), key[1])
        return self._fonts[key]

    def face_for(self, text: str) -> Path | None:
        """The face that can draw most of `text`'s characters; the main face unless a fallback does better."""
        chars = {ord(c) for c in text if not c.isspace()}
        if self.path is None or not self.fallbacks or not chars:
            return self.path
        best, best_missing = self.path, self._missing(self.path, chars)
        for face in self.fallbacks:
            if best_missing == 0:
                break
            missing = self._missing(face, chars)
            if missing < best_missing:
                best, best_missing = face, missing
        return best

    def _missing(self, face: Path, chars: set[int]) -> int:
        if face not in self._coverage:
            try:
                self._coverage[face] = cmap_ranges(face)
            except (OSError, ValueError, struct.error):
                self._coverage[face] = None
        ranges = self._coverage[face]
        if ranges is None:
            return len(chars) if face != self.path else 0  # unknown: trust the main face, distrust a fallback
        starts = [r[0] for r in ranges]
        missing = 0
        for c in chars:
            k = bisect.bisect_right(starts, c) - 1
            missing += not (k >= 0 and c <= ranges[k][1])
        return missing


def cmap_ranges(path: Path) -> list[tuple[int, int]]:
    """Sorted (first, last) code point ranges a TrueType/OpenType font (or the first font of a .ttc) maps."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        base = struct.unpack_from(">I", data, 12)[0] if data[:4] == b"ttcf" else 0
        (tables,) = struct.unpack_from(">H", data, base + 4)
        cmap = None
        for i in range(tables):
            tag, _, offset, _ = struct.unpack_from(">4sIII", data, base + 12 + 16 * i)
            if tag == b"cmap":
                cmap = offset
        if cmap is None:
            raise ValueError(f"{path} has no cmap table")
        _, count = struct.unpack_from(">HH", data, cmap)
        subtables = {}
        for i in range(count):
            platform, encoding, offset = struct.unpack_from(">HHI", data, cmap + 4 + 8 * i)
            fmt = struct.unpack_from(">H", data, cmap + offset)[0]
            if (platform, encoding) in ((3, 10), (0, 4), (0, 6), (3, 1), (0, 3)) and fmt in (4, 12):
                subtables[fmt] = cmap + offset
        if 12 in subtables:
            at = subtables[12]
            (groups,) = struct.unpack_from(">I", data, at + 12)
            ranges = [struct.unpack_from(">II", data, at + 16 + 12 * g) for g in range(groups)]
        elif 4 in subtables:
            at = subtables[4]
            segments = struct.unpack_from(">H", data, at + 6)[0] // 2
            ends = struct.unpack_from(f">{segments}H", data, at + 14)
            starts = struct.unpack_from(f">{segments}H", data, at + 16 + 2 * segments)
            ranges = [(s, e) for s, e in zip(starts, ends, strict=True) if s != 0xFFFF]
        else:
            raise ValueError(f"{path} has no Unicode cmap")
    return sorted(ranges)
