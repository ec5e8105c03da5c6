"""Saving a character's bank and reusing it in another story."""

from __future__ import annotations

import json

import pytest

from storyd.comic import ComicOptions, render_comic
from storyd.errors import InputError
from storyd.story.loader import load_story

FIRST = """
model: tiny
seed: 1
characters:
  Mia: a kid with red hair
panels:
  - Mia waving on the beach
  - Mia running in a forest
  - Mia sitting in a room
"""
SEQUEL = """
model: tiny
seed: 2
characters:
  Mia: a kid with red hair
panels:
  - Mia jumping in a snowy field
  - Mia standing on a city street
"""


def test_a_saved_bank_replaces_the_reference_panels(write_story, tmp_path):
    banks = tmp_path / "banks"
    first = render_comic(
        load_story(write_story(FIRST, "first.yaml")), ComicOptions(out_dir=tmp_path / "a", save_characters=banks)
    )
    assert [p.name for p in first.saved_banks] == ["Mia.safetensors"]
    sequel = load_story(write_story(SEQUEL, "sequel.yaml"))
    result = render_comic(sequel, ComicOptions(out_dir=tmp_path / "b", load_characters=banks))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [p["role"] for p in manifest["panels"]] == ["read", "read"]  # no reference panels drawn
    assert result.rendered == [0, 1]


def test_a_bank_for_another_size_is_refused(write_story, tmp_path):
    banks = tmp_path / "banks"
    render_comic(
        load_story(write_story(FIRST, "first.yaml")), ComicOptions(out_dir=tmp_path / "a", save_characters=banks)
    )
    bigger = load_story(write_story(SEQUEL.replace("seed: 2", "seed: 2\nsize: 128"), "sequel.yaml"))
    with pytest.raises(InputError) as info:
        render_comic(bigger, ComicOptions(out_dir=tmp_path / "b", load_characters=banks))
    assert "width 64 (this run: 128)" in info.value.message and info.value.path.endswith("Mia.safetensors")


def test_a_file_that_is_not_a_bank_is_refused(write_story, tmp_path):
    banks = tmp_path / "banks"
    banks.mkdir()
    (banks / "Mia.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read character bank"):
        render_comic(load_story(write_story(SEQUEL)), ComicOptions(out_dir=tmp_path / "b", load_characters=banks))
