"""Typefaces for lettering: the packaged comic font, a user's font, Pillow's default, and
fallbacks for characters the main face lacks (the comic font has no CJK, for example).

Text is lettered glyph by glyph: each character in the first face that has it (the main
face, then the fallbacks in order), so a caption mixing English and Japanese draws both.
Coverage comes from each font's `cmap` table, read once per face. A character no face
has is drawn by the main face (usually as a box); `Lettering.missing` finds those, so
that callers can warn.
"""

from __future__ import annotations

import bisect
import math
import mmap
import struct
import unicodedata
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from PIL import ImageFont

from storyd.errors import InputError

# Fonts from Debian packages, used only where installed:
# fonts-dejavu-core, fonts-noto-cjk, fonts-wqy-zenhei, fonts-droid-fallback.
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SYSTEM_CJK = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
)


def packaged_font() -> Path | None:
    """The comic-lettering font from the `font-intuitive` package (SIL OFL 1.1), if installed."""
    return _package_file("font_intuitive", "files/Intuitive.ttf")


def packaged_cjk_font() -> Path | None:
    """Noto Sans CJK (Japanese-first Pan-CJK: kana, Han, Hangul, and Latin, Greek and Cyrillic too)
    from the `noto-cjk-sans-jp-regular` package (SIL OFL 1.1), if installed."""
    return _package_file("noto_cjk_sans_jp_regular", "NotoSansCJKjp-Regular.otf")


def _package_file(package: str, name: str) -> Path | None:
    try:
        path = resources.files(package).joinpath(*name.split("/"))
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def default_fallbacks() -> tuple[Path, ...]:
    """DejaVu first where installed (it matches Latin lettering's weight best for Cyrillic and
    Greek), then the packaged CJK face, then the system's CJK faces."""
    return tuple(p for p in (DEJAVU, packaged_cjk_font(), *SYSTEM_CJK) if p is not None and p.is_file())


class Lettering:
    """One typeface at any size: a named .ttf/.otf, else the packaged font, else Pillow's default;
    plus fallback faces for characters the main face lacks (None: `default_fallbacks()`)."""

    def __init__(
        self, path: Path | None = None, *, packaged: bool = True, fallbacks: Sequence[Path] | None = None
    ) -> None:
        self.path = Path(path) if path is not None else (packaged_font() if packaged else None)
        fallbacks = default_fallbacks() if fallbacks is None else fallbacks
        self.fallbacks = tuple(p for p in fallbacks if p.is_file() and p != self.path)
        self._faces: dict[tuple[Path | None, int], ImageFont.FreeTypeFont] = {}
        self._fonts: dict[int, MixedFont] = {}
        self._coverage: dict[Path, list[tuple[int, int]] | None] = {}
        self._found: dict[str, tuple[bool, Path | None]] = {}
        if path is not None:
            try:
                self.face(12)
            except OSError:
                raise InputError(
                    f"can't read the font {path}", hint="name a .ttf or .otf file, or leave `font` out", path=path
                ) from None

    def font(self, size: int) -> MixedFont:
        """The lettering at `size` px: one font object that measures and draws with every face."""
        size = max(1, int(size))
        if size not in self._fonts:
            self._fonts[size] = MixedFont(self, size)
        return self._fonts[size]

    def face(self, size: int, face: Path | None = None) -> ImageFont.FreeTypeFont:
        """One face (the main one unless named) at `size` px."""
        face = face or self.path
        key = (face, max(1, int(size)))
        if key not in self._faces:
            self._faces[key] = ImageFont.load_default(key[1]) if face is None else ImageFont.truetype(str(face), key[1])
        return self._faces[key]

    def face_of(self, char: str) -> Path | None:
        """The first face that has `char`, the main one first; None for Pillow's own font (the main face where
        none is installed, trusted to have everything) and where no face has it: `missing` tells them apart."""
        return self._find(char)[1]

    def _find(self, char: str) -> tuple[bool, Path | None]:
        """Whether any face has `char`, and the first that does (the main one first)."""
        if char not in self._found:
            code = ord(char)
            self._found[char] = next(((True, f) for f in (self.path, *self.fallbacks) if self._covers(f, code)),
                                     (False, None))
        return self._found[char]

    def runs(self, text: str) -> list[tuple[Path | None, str]]:
        """`text` split into runs of one face each. Spaces and combining marks stay in the run
        they sit in; a character no face has goes to the main face."""
        runs: list[tuple[Path | None, str]] = []
        for char in text:
            if runs and (char.isspace() or unicodedata.combining(char)):
                face = runs[-1][0]
            else:
                face = self.face_of(char)
                face = self.path if face is None else face
            if runs and runs[-1][0] == face:
                runs[-1] = (face, runs[-1][1] + char)
            else:
                runs.append((face, char))
        return runs

    def missing(self, text: str) -> list[str]:
        """The distinct characters of `text`, in order, that no face can draw."""
        chars = dict.fromkeys(c for c in text if not c.isspace() and not unicodedata.combining(c))
        return [c for c in chars if not self._find(c)[0]]

    def _covers(self, face: Path | None, code: int) -> bool:
        if face is None:
            return True  # Pillow's own font: its coverage is unknown, so trust it
        if face not in self._coverage:
            try:
                self._coverage[face] = cmap_ranges(face)
            except (OSError, ValueError, struct.error):
                self._coverage[face] = None
        ranges = self._coverage[face]
        if ranges is None:
            return face == self.path  # unknown: trust the main face, distrust a fallback
        k = bisect.bisect_right(ranges, (code, 0x7FFFFFFF)) - 1
        return k >= 0 and ranges[k][0] <= code <= ranges[k][1]


class MixedFont:
    """A Lettering at one size, with the measuring calls of Pillow's FreeTypeFont that lettering
    uses, and `draw`. Text all in the main face goes straight to it; mixed text is measured and
    drawn run by run, every run on the main face's baseline."""

    def __init__(self, lettering: Lettering, size: int) -> None:
        self.lettering = lettering
        self.size = size
        self.main = lettering.face(size)
        self.path = getattr(self.main, "path", None)

    def _runs(self, text: str) -> list[tuple[ImageFont.FreeTypeFont, str]]:
        return [(self.lettering.face(self.size, face), run) for face, run in self.lettering.runs(text)]

    def _single(self, runs) -> bool:
        return len(runs) <= 1 and (not runs or runs[0][0] is self.main)

    def getmetrics(self) -> tuple[int, int]:
        return self.main.getmetrics()

    def getlength(self, text: str) -> float:
        runs = self._runs(text)
        if self._single(runs):
            return self.main.getlength(text)
        return sum(font.getlength(run) for font, run in runs)

    def getbbox(self, text: str, anchor: str = "la", stroke_width: int = 0) -> tuple[int, int, int, int]:
        """The ink box of `text` drawn at (0, 0) with `anchor` "la" (left, ascender)."""
        runs = self._runs(text)
        if self._single(runs):
            return self.main.getbbox(text, anchor=anchor, stroke_width=stroke_width)
        ascent = self.main.getmetrics()[0]
        x, box = 0.0, None
        for font, run in runs:
            left, top, right, bottom = font.getbbox(run, anchor="ls", stroke_width=stroke_width)
            part = (left + x, top + ascent, right + x, bottom + ascent)
            box = part if box is None else (min(box[0], part[0]), min(box[1], part[1]), max(box[2], part[2]),
                                            max(box[3], part[3]))
            x += font.getlength(run)
        # outward: a run placed at a fractional x inks the pixel its edge falls in
        return math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])

    def draw(self, draw, xy: tuple[float, float], text: str, **kwargs) -> None:
        """Draw `text` with its left ascender point at `xy` (Pillow's anchor "la")."""
        runs = self._runs(text)
        if self._single(runs):
            draw.text(xy, text, font=self.main, anchor="la", **kwargs)
            return
        x, y = xy
        baseline = y + self.main.getmetrics()[0]
        for font, run in runs:
            draw.text((x, baseline), run, font=font, anchor="ls", **kwargs)
            x += font.getlength(run)


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
