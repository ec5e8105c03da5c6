"""Lettering in any script: per-glyph font fallback (Noto Sans CJK ships as a package), CJK line
breaking, and one warning for each caption or balloon holding a character no font can draw."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFont
from typer.testing import CliRunner

from storyd.cli.app import app
from storyd.layout import lettering_warnings
from storyd.layout.fonts import Lettering, cmap_ranges, packaged_cjk_font
from storyd.layout.text import clean, fit_text
from storyd.story.loader import load_story

CJK = packaged_cjk_font()
pytestmark = pytest.mark.skipif(CJK is None, reason="needs the noto-cjk-sans-jp-regular package")


@pytest.fixture(scope="module")
def lettering():
    return Lettering()


def test_the_packaged_cjk_font_covers_japanese_chinese_and_korean():
    ranges = cmap_ranges(CJK)
    for char in "あア漢字你好한글":
        assert any(lo <= ord(char) <= hi for lo, hi in ranges), char


def test_mixed_text_is_split_into_runs_by_the_face_that_has_each_glyph(lettering):
    runs = lettering.runs("Mia says こんにちは, 世界!")
    assert runs[0] == (lettering.path, "Mia says ")
    assert any(face == CJK and "こんにちは" in text for face, text in runs)
    assert lettering.missing("Mia says こんにちは 你好 안녕") == []


def ink(text: str, lettering: Lettering) -> Image.Image:
    block = fit_text(text, lettering, 400, 80, max_size=32)
    image = Image.new("L", (400, 80), 255)
    block.draw(ImageDraw.Draw(image), 0, 0, 400, 80, fill=0)
    return image


def test_latin_text_draws_exactly_as_with_the_comic_font_alone(lettering):
    text = "Good morning, waves!"
    block = fit_text(text, lettering, 400, 80, max_size=32)
    plain = ImageFont.truetype(str(lettering.path), block.font.size)
    expected = Image.new("L", (400, 80), 255)
    drawn = ink(text, lettering)
    top = round((80 - block.height) / 2) - block.top
    left, right = block.line_extents[0]
    x = round((400 - (right - left)) / 2) - left
    ImageDraw.Draw(expected).text((x, top), text, font=plain, fill=0, anchor="la")
    assert ImageChops.difference(drawn, expected).getbbox() is None


def test_japanese_is_drawn_in_the_cjk_face_not_dropped(lettering):
    alone = Lettering(fallbacks=[])  # the comic font alone has no kana
    assert alone.missing("こんにちは") == list("こんにちは")
    drawn = ink("こんにちは", lettering)
    assert drawn.getextrema()[0] == 0  # ink
    assert ImageChops.difference(drawn, ink("こんにちは", alone)).getbbox() is not None


def test_cjk_text_wraps_between_characters_instead_of_shrinking(lettering):
    text = "昔々、ある村に小さな女の子が住んでいました。彼女は毎朝海へ行きました。"
    block = fit_text(text, lettering, 200, 300, max_size=30)
    assert block.font.size == 30 and len(block.lines) > 2 and block.width <= 200
    assert "".join(block.lines) == text
    assert not any(line.startswith(("、", "。")) for line in block.lines)  # closing marks stay on their line


def test_emoji_joiners_and_variation_selectors_are_cleaned():
    assert clean("❤\ufe0f ok \u200d") == "❤ ok"


def test_one_warning_per_text_naming_the_character_and_where(write_story):
    story = load_story(
        write_story(
            """
            characters:
              Mia: a girl
            panels:
              - prompt: Mia on the beach
                caption: "Sunny 🙂 day 🙂"
                dialogue:
                  - Mia: こんにちは
              - prompt: Mia at home
                dialogue:
                  - Mia: fine
                  - Mia: "🦄!"
            """
        )
    )
    warnings = lettering_warnings(story)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("panel 1's caption:") and "'🙂' (U+1F642)" in warnings[0]
    assert warnings[0].count("🙂") == 1
    assert warnings[1].startswith("panel 2's dialogue line 2:") and "U+1F984" in warnings[1]


def test_validate_prints_the_lettering_warning(write_story, tokenizer, monkeypatch):
    monkeypatch.setattr("storyd.render.tokenizer.load_clip_tokenizer", lambda *a, **k: tokenizer)
    path = write_story("panels:\n  - prompt: a cat\n    caption: hi 🙂\n")
    result = CliRunner().invoke(app, ["validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 0
    assert "panel 1's caption" in result.stderr and "U+1F642" in result.stderr
