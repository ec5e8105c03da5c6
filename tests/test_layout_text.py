"""Lettering: wrapping, shrink-to-fit, and text that always stays inside its box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from storyd.errors import InputError
from storyd.layout.fonts import Lettering, cmap_ranges, packaged_font
from storyd.layout.text import ELLIPSIS, clean, fit_text, line_width, wrap


@pytest.fixture(scope="module")
def lettering():
    return Lettering()


def ink_box(block, w: int, h: int, margin: int = 40):
    """Draw the block centred in a w x h box placed `margin` px inside a blank canvas; return the ink's bbox."""
    canvas = Image.new("L", (w + 2 * margin, h + 2 * margin), 0)
    block.draw(ImageDraw.Draw(canvas), margin, margin, w, h, fill=255)
    ys, xs = np.nonzero(np.asarray(canvas))
    if len(xs) == 0:
        return None
    return xs.min() - margin, ys.min() - margin, xs.max() - margin + 1, ys.max() - margin + 1


TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFFF)
    | st.sampled_from(list(" \n-—éß你好🙂")),
    max_size=120,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=TEXT,
    w=st.integers(1, 400),
    h=st.integers(1, 300),
    size=st.integers(6, 60),
    stroke=st.sampled_from([0.0, 0.05]),
)
@example(text="000\r⺀\rB÷ۥe", w=53, h=42, size=20, stroke=0.05)  # a CJK run then a Latin one at a fractional x
def test_fitted_text_never_leaves_its_box(lettering, text, w, h, size, stroke):
    block = fit_text(text, lettering, w, h, max_size=size, min_size=6, stroke_ratio=stroke)
    assert block.width <= w and block.height <= h
    assert block.font.size <= size
    ink = ink_box(block, w, h)
    if ink is not None:
        x0, y0, x1, y1 = ink
        assert x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h, (ink, w, h, block.lines)


def test_text_shrinks_to_fit_and_uses_the_largest_size(lettering):
    text = "The storm came in from the sea that night, and the old lighthouse was the only light for miles."
    roomy = fit_text(text, lettering, 600, 400, max_size=30)
    tight = fit_text(text, lettering, 200, 80, max_size=30)
    assert roomy.font.size == 30
    assert tight.font.size < 30 and tight.width <= 200 and tight.height <= 80
    bigger = fit_text(text, lettering, 200, 80, max_size=tight.font.size + 1, balance=False)
    assert bigger.font.size == tight.font.size  # one size up does not fit
    assert " ".join(tight.lines) == text  # nothing lost, breaks only at spaces


def test_wrap_breaks_at_spaces_then_hyphens_then_characters(lettering):
    font = lettering.font(20)
    lines = wrap("a well-known lighthouse", font, line_width(font, "a well-known") + 1)
    assert lines == ["a well-known", "lighthouse"]
    lines = wrap("well-known", font, max(line_width(font, "well-"), line_width(font, "known")) + 1)
    assert lines == ["well-", "known"]
    long = "x" * 200
    lines = wrap(long, font, 100)
    assert "".join(lines) == long and all(line_width(font, line) <= 100 for line in lines)
    assert wrap("one\n\ntwo", font, 500) == ["one", "", "two"]


def test_words_are_not_split_while_a_smaller_size_keeps_them_whole(lettering):
    font30 = lettering.font(30)
    width = line_width(font30, "morning,") - 2  # too narrow for the word at the largest size
    block = fit_text("Good morning, waves!", lettering, width, 400, max_size=30)
    assert block.font.size < 30
    assert sorted(" ".join(block.lines).split()) == sorted("Good morning, waves!".split())


def test_balanced_lines_are_even(lettering):
    text = "Only the wind. Go back to sleep, kid, it is late."
    greedy = fit_text(text, lettering, 300, 300, max_size=24, balance=False)
    even = fit_text(text, lettering, 300, 300, max_size=24)
    assert len(even.lines) == len(greedy.lines) > 1
    widths = [line_width(even.font, line) for line in even.lines]
    greedy_widths = [line_width(greedy.font, line) for line in greedy.lines]
    assert max(widths) - min(widths) <= max(greedy_widths) - min(greedy_widths)


def test_text_too_long_for_the_smallest_size_is_cut_with_an_ellipsis(lettering):
    block = fit_text("word " * 400, lettering, 120, 40, max_size=20, min_size=8)
    assert block.font.size == 8 and block.lines and block.lines[-1].endswith(ELLIPSIS)
    assert block.width <= 120 and block.height <= 40
    assert fit_text("anything", lettering, 3, 3, max_size=20).lines == ()


def test_clean_keeps_unicode_and_drops_what_cannot_be_drawn():
    assert clean("Ça va? 你好 🙂\tok\x00\x07") == "Ça va? 你好 🙂 ok"
    assert clean("bad \ud800 surrogate") == "bad \ufffd surrogate"
    assert clean("e\u0301") == "é"  # NFC


def test_fonts_packaged_pillow_default_and_user(tmp_path):
    assert packaged_font() is not None and packaged_font().suffix == ".ttf"
    user = Lettering(packaged_font())
    assert user.font(20).size == 20
    assert user.font(20) is user.font(20)  # sizes are cached per instance
    default = Lettering(packaged=False)
    assert default.path is None
    assert fit_text("Héllo 你好", default, 200, 100, max_size=20).lines  # Pillow's own font works too
    # with no font installed at all, Pillow's own is the main face: nothing is reported missing
    assert Lettering(packaged=False, fallbacks=()).missing("Good morning, waves!") == []
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"not a font")
    with pytest.raises(InputError, match="bad.ttf"):
        Lettering(bad)


DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def covers(path, char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in cmap_ranges(path))


def test_cmap_coverage_of_the_packaged_font():
    font = packaged_font()
    assert covers(font, "A") and covers(font, "é") and covers(font, "€")
    assert not covers(font, "ж") and not covers(font, "你")


@pytest.mark.skipif(not DEJAVU.is_file(), reason="needs Debian's fonts-dejavu-core")
def test_a_fallback_face_letters_glyphs_the_comic_font_lacks():
    lettering = Lettering(fallbacks=[DEJAVU])
    assert lettering.runs("Hello, café!") == [(lettering.path, "Hello, café!")]
    assert lettering.runs("Hi Привет") == [(lettering.path, "Hi "), (DEJAVU, "Привет")]
    assert lettering.missing("Hi 🤔🦄 Привет 🤔") == ["🤔", "🦄"]  # neither face has them
    assert lettering.runs("🤔") == [(lettering.path, "🤔")]  # drawn by the main face
    block = fit_text("Привет, мир", lettering, 300, 100, max_size=30)
    assert block.lines == ("Привет, мир",) and block.width > 0
    assert Lettering(fallbacks=[]).runs("Привет") == [(lettering.path, "Привет")]
