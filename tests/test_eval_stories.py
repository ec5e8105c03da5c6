"""The evaluation story set: its size and shape, and that the toy part speaks the toy model's language."""

from __future__ import annotations

from pathlib import Path

import pytest

from storyd.eval.toy_metrics import parse_toy_prompt
from storyd.story.loader import load_story
from storyd.story.prompts import build_prompts
from storyd.toy.captions import VOCABULARY
from storyd.toy.world import LOOK_ATTRS

ROOT = Path(__file__).resolve().parent.parent / "stories" / "eval"


def stories(part: str):
    return [load_story(p) for p in sorted((ROOT / part).glob("*.yaml"))]


@pytest.mark.parametrize("part, least", [("general", 30), ("toy", 20)])
def test_set_sizes_panel_counts_and_cast_sizes(part, least):
    loaded = stories(part)
    assert len(loaded) >= least
    assert all(4 <= len(s.panels) <= 8 for s in loaded)
    assert {len(s.characters) for s in loaded} == {1, 2}
    assert len({s.seed for s in loaded}) == len(loaded)


def test_general_set_covers_people_animals_and_objects():
    kinds = [p.read_text(encoding="utf-8").splitlines()[0] for p in sorted((ROOT / "general").glob("*.yaml"))]
    for kind in ("(person,", "(animal,", "(object,"):
        assert sum(kind in line for line in kinds) >= 5, kind


def test_toy_stories_use_only_the_toy_vocabulary_and_leave_the_look_underspecified():
    for story in stories("toy"):
        assert story.model == "toy"
        for prompt in build_prompts(story):
            assert set(prompt.base.split()) <= VOCABULARY, (story.name, prompt.base)
            named = parse_toy_prompt(prompt.base)
            assert "setting" in named and len(named["figures"]) == len(prompt.characters)
            for figure in named["figures"]:
                assert len([a for a in LOOK_ATTRS if a not in figure]) >= 5, (story.name, prompt.base)
