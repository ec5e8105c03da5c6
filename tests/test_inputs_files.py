"""Bad input is one line naming file:line and exit 2, never a traceback: numbers that are not
finite, deep nesting, control characters, devices and folders given as files, images too large
to decode, pages too large to draw, a layout with no room (caught before any panel is drawn);
and the PDF and CBZ are byte-reproducible."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from support import png_header
from typer.testing import CliRunner

from storyd.cli.app import app
from storyd.errors import InputError
from storyd.layout.export import write_pages
from storyd.plan.render_plan import plan_story
from storyd.preflight import preflight
from storyd.story.loader import load_story
from storyd.story.model import LayoutSettings

runner = CliRunner()
REAL_GMTIME = time.gmtime
STORY = """
title: t
characters:
  Maya: a girl with a red scarf
panels:
  - Maya on the beach
"""


def validate(path) -> tuple[int, list[str]]:
    result = runner.invoke(app, ["validate", str(path)], catch_exceptions=False)
    return result.exit_code, result.stderr.strip().splitlines()


def fails_at(path: Path, line: int | None, *words: str) -> str:
    code, lines = validate(path)
    assert code == 2 and len(lines) == 1, lines
    where = f"Error: {path}:{line}" if line else f"Error: {path}"
    assert lines[0].startswith(where), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_numbers_that_are_not_finite_are_refused(write_story, value):
    fails_at(write_story(f"guidance: {value}\npanels: [a cat]\n"), 1, "guidance", "not a finite number")
    character = f"characters:\n  Maya:\n    description: girl\n    reference_scale: {value}\npanels: [Maya]\n"
    fails_at(write_story(character), 4, "reference_scale")


def test_nesting_5000_deep_is_one_line_not_a_recursion_error(write_story):
    path = write_story("title: deep\npanels:\n  - " + "[" * 5000 + "]" * 5000 + "\n")
    fails_at(path, 3, "nested more than 64 deep")
    path = write_story("title: deep\nlayout:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300)))
    fails_at(path, None, "nested more than 64 deep")


def test_control_characters_and_bad_tags_name_their_line(write_story):
    fails_at(write_story("title: ok\npanels:\n  - a cat\x00 here\n"), 3, "U+0000")
    fails_at(write_story("title: !!int abc\npanels: [a cat]\n"), 1, "can't read this value")
    fails_at(write_story("title: !custom x\npanels: [a cat]\n"), 1, "can't read this value")
    fails_at(write_story("model: no-such-model\npanels: [a cat]\n"), 1, "model 'no-such-model'")


def test_bad_utf8_names_its_line(tmp_path):
    path = tmp_path / "story.yaml"
    path.write_bytes(b"title: ok\npanels:\n  - caf\xe9\n")
    fails_at(path, 3, "not UTF-8")


def test_devices_folders_and_huge_files_are_not_stories(tmp_path):
    assert validate("/dev/zero")[0] == 2 and "not a regular file" in validate("/dev/zero")[1][0]
    assert "is a folder" in validate(tmp_path)[1][0]
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (5 * 1024 * 1024))
    fails_at(big, None, "larger than 4 MiB")


def test_a_folder_or_device_given_as_a_reference_says_so(write_story, tmp_path):
    base = "characters:\n  Maya:\n    description: girl\n    reference: {}\npanels: [Maya on the beach]\n"
    (tmp_path / "refs").mkdir()
    fails_at(write_story(base.format("refs")), 4, "is a folder, not a file")
    fails_at(write_story(base.format("/dev/zero")), 4, "not a regular file")
    fails_at(write_story(base.format("nowhere.png")), 4, "no such file")


@pytest.mark.parametrize("side", [30000, 9000])  # past Pillow's bomb limit, and past storyd's own
def test_a_reference_declaring_huge_pixels_is_one_line(write_story, tmp_path, side):
    png_header(tmp_path / "huge.png", side, side)
    story = "characters:\n  Maya:\n    description: girl\n    reference: huge.png\npanels: [Maya on the beach]\n"
    fails_at(write_story(story), 4, "too large to open safely")


def test_page_size_is_bounded_with_the_reason(write_story):
    message = fails_at(write_story("panels: [a cat]\nlayout:\n  page: 100000x100000px\n"), 2, "100000x100000 px")
    assert "20000 px a side" in message and "in memory" in message
    fails_at(write_story("panels: [a cat]\nlayout: {page: 60x60in, dpi: 600}\n"), 2, "too large to draw")
    assert load_story(write_story("panels: [a cat]\nlayout: {page: a4, dpi: 1200}\n")).layout.dpi == 1200
    digits = "1" + "0" * 400  # read as infinity
    fails_at(write_story(f"panels: [a cat]\nlayout:\n  page: {digits}x5px\n"), 2, "far too large")
    fails_at(write_story(f"panels: [a cat]\nlayout:\n  margin: {digits}mm\n"), 2, "far too large")


def test_a_layout_with_no_room_fails_at_load_before_any_panel_is_drawn(write_story):
    fails_at(write_story(STORY + "layout:\n  margin: 500mm\n"), 6, "no room inside its margins")
    fails_at(write_story(STORY + "layout: {gutter: 100mm, rows: 4, columns: 4}\n"), 6, "would be only")
    fails_at(write_story(STORY + "layout: {template: strip, margin: 110mm}\n"), 6, "no room")


def test_the_preflight_checks_the_layout_too(write_story, tokenizer):
    """A layout changed after loading (as `storyd layout --template` does) fails before any model loads."""
    story = load_story(write_story(STORY))
    bad = replace(story, layout=replace(story.layout, margin="500mm"))
    with pytest.raises(InputError, match="no room") as caught:
        preflight(plan_story(bad, tokenizer=tokenizer))
    assert caught.value.path == str(story.path)
    preflight(plan_story(story, tokenizer=tokenizer))  # the same story with its own layout has room


def test_pdf_and_cbz_are_byte_reproducible(tmp_path, monkeypatch):
    pages = [Image.new("RGB", (120, 160), (40 * i, 90, 200)) for i in range(3)]
    settings = LayoutSettings(cbz=True)
    digests = []
    for n, when in enumerate((1_000_000_000, 1_700_000_000)):  # two runs, far apart in time
        with monkeypatch.context() as patch:
            patch.setattr(time, "gmtime", lambda *a, when=when: REAL_GMTIME(when))
            patch.setattr(time, "localtime", lambda *a, when=when: REAL_GMTIME(when))
            write_pages(pages, tmp_path / str(n), settings=settings, title="Same")
        files = [tmp_path / str(n) / name for name in ("comic.pdf", "comic.cbz")]
        digests.append([hashlib.sha256(f.read_bytes()).digest() for f in files])
    assert digests[0] == digests[1]
    assert b"CreationDate" not in (tmp_path / "0" / "comic.pdf").read_bytes()
