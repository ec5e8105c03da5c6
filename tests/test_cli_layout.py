"""`storyd layout`: re-lay existing panels from a story file, through the Typer app."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

STORY = """
title: The Keeper
layout:
  page: 600x800px
  dpi: 100
  margin: 20px
  gutter: 10px
  cbz: true
panels:
  - prompt: a lighthouse at night
    caption: The storm came in from the sea.
  - prompt: a girl at a window
    dialogue:
      - {speaker: Mara, text: "Did you hear that?", kind: speech}
      - {speaker: Tom, text: "Only the wind...", kind: whisper, tail: right}
  - prompt: the lamp goes out
    dialogue:
      - {speaker: Mara, text: "TOM! THE LAMP!", kind: shout}
"""


@pytest.fixture
def project(tmp_path, write_story, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    story = write_story(STORY, name="keeper.yaml")
    panels = tmp_path / "out" / "keeper" / "panels"
    panels.mkdir(parents=True)
    for i, colour in enumerate(["red", "green", "blue"], start=1):
        Image.new("RGB", (64, 64), colour).save(panels / f"{i:03d}.png")
    return story, panels


def test_layout_uses_the_default_folders_and_reports_json(cli, project, tmp_path):
    story, _ = project
    result = cli("layout", story, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["pages"] == 1 and data["template"] == "auto"
    out = tmp_path / "out" / "keeper"
    assert data["files"] == ["out/keeper/pages/page-001.png", "out/keeper/comic.pdf", "out/keeper/comic.cbz"]
    assert Image.open(out / "pages" / "page-001.png").size == (600, 800)
    assert len(re.findall(rb"/Type\s*/Page\b", (out / "comic.pdf").read_bytes())) == 1


def test_existing_output_needs_force(cli, project, tmp_path):
    story, panels = project
    out = tmp_path / "elsewhere"
    assert cli("layout", story, "--panels", panels, "-o", out, "-q").exit_code == 0
    again = cli("layout", story, "--panels", panels, "-o", out)
    assert again.exit_code == 2
    assert "page-001.png already exists" in again.output and "--force" in again.output
    assert cli("layout", story, "--panels", panels, "-o", out, "--force", "-q").exit_code == 0


def test_template_override(cli, project, tmp_path):
    story, _ = project
    result = cli("layout", story, "--template", "strip", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["template"] == "strip"
    page = Image.open(tmp_path / "out" / "keeper" / "pages" / "page-001.png")
    assert page.width == 600 and page.height < 400  # one row of panels, not a full page
    bad = cli("layout", story, "--template", "zigzag", "--force")
    assert bad.exit_code == 2 and "zigzag" in bad.output


def test_missing_or_extra_panels_are_named(cli, project):
    story, panels = project
    (panels / "002.png").unlink()
    result = cli("layout", story)
    assert result.exit_code == 2 and "002.png is missing" in result.output and "storyd comic" in result.output
    Image.new("RGB", (8, 8)).save(panels / "002.png")
    Image.new("RGB", (8, 8)).save(panels / "004.png")
    result = cli("layout", story)
    assert result.exit_code == 2 and "004.png has no panel" in result.output
