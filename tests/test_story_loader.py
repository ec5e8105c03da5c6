from pathlib import Path

import pytest

from storyd.errors import InputError
from storyd.story.loader import load_story

GOOD = """
title: Beach day
style: comic-book
seed: 7
size: 512x384
steps: 20
guidance: 6.5
negative: blurry
consistency:
  id_panels: 3
  sampling_rate: [0.4, 0.6]
  layers: [0, 1]
  random_skip: false
  reference_guidance: 8
characters:
  Maya: a kid with red hair in a blue shirt
  Leo:
    description: a kid with black hair in a green shirt
panels:
  - prompt: Maya waving on the beach
    caption: Morning.
    dialogue:
      - Maya: Hello!
      - speaker: Leo
        text: Hi!
        kind: shout
        tail: right
    span: wide
  - prompt: "[Leo] sitting in a forest"
    seed: 99
  - "[NC] a snowy field"
  - prompt: Maya and Leo running on a city street
  - prompt: a quiet room
    characters: [Leo]
layout:
  template: grid
  page: 1200x1800px
  margin: 12px
  border_color: "#222222"
"""


def test_a_full_story_loads_with_every_field(write_story):
    story = load_story(write_story(GOOD))
    assert (story.title, story.style, story.seed, story.width, story.height) == ("Beach day", "comic-book", 7, 512, 384)
    assert story.steps == 20 and story.guidance == 6.5 and story.negative == "blurry"
    assert story.consistency.id_panels == 3 and story.consistency.sampling_rate == (0.4, 0.6)
    assert story.consistency.layers == "levels:0,1" and story.consistency.random_skip is False
    assert story.consistency.reference_guidance == 8.0
    assert list(story.characters) == ["Maya", "Leo"]
    p = story.panels
    assert p[0].characters == ("Maya",) and p[0].caption == "Morning." and p[0].span == "wide"
    assert [(d.speaker, d.text, d.kind, d.tail) for d in p[0].dialogue] == [
        ("Maya", "Hello!", "speech", "auto"),
        ("Leo", "Hi!", "shout", "right"),
    ]
    assert p[1].characters == ("Leo",) and p[1].seed == 99
    assert p[2].characters == ()
    assert p[3].characters == ("Maya", "Leo")
    assert p[4].characters == ("Leo",)
    assert story.layout.template == "grid" and story.layout.page == "1200x1800px"
    assert p[0].line == 19


@pytest.mark.parametrize(
    "text, line, col, fragment",
    [
        ("panels:\n  - prompt: a\nsed: 3\n", 3, 1, "unknown key 'sed' in the story; did you mean 'seed'?"),
        ("seed: ten\npanels: [a]\n", 1, 7, "seed must be a whole number"),
        ("panels:\n  - prompt: Bob runs\n    characters: [Bob]\n", 3, 18, "panel 1 shows 'Bob', who is not defined"),
        ("characters:\n  Ann: a kid\npanels:\n  - '[Bob] runs'\n", 4, 5, "names [Bob], who is not defined"),
        ("panels:\n  - caption: hi\n", 2, 5, "panel 1 has no prompt"),
        ("style: vaporwave\npanels: [a]\n", 1, 8, "style 'vaporwave' is not one of the known values"),
        ("size: 500\npanels: [a]\n", 1, 7, "multiple of 8"),
        ("panels: [a]\nlayout:\n  margin: wide\n", 3, 11, "layout.margin 'wide' is not a length"),
        (
            "panels:\n  - prompt: a\n    dialogue:\n      - speaker: A\n        text: x\n        kind: sing\n",
            6,
            15,
            "kind 'sing' is not one of the known values",
        ),
        ("characters:\n  Ann:\n    description: a\n    reference: nope.png\npanels: [a]\n", 4, 16, "no such file"),
        ("title: [unclosed\n", 2, 1, "not valid YAML"),
        ("title: x\n", 1, 1, "no 'panels:' list"),
        ("panels: []\n", 1, 9, "no panels"),
        ("consistency:\n  sampling_rate: 1.5\npanels: [a]\n", 2, 18, "consistency.sampling_rate 1.5 is out of range"),
        ("consistency:\n  read_step: first\npanels: [a]\n", 2, 14, "not one of the known values"),
        ("consistency:\n  uncond_reads: maybe\npanels: [a]\n", 2, 17, "true or false"),
        ("consistency:\n  reference_guidance: 1\npanels: [a]\n", 2, 23, "use a value above 1"),
        ("consistency:\n  id_panels: 0\npanels: [a]\n", 2, 14, "consistency.id_panels 0 is out of range"),
        ("consistency:\n  layers: [0, 9]\npanels: [a]\n", 2, 11, "consistency.layers 'levels:0,9' is not a layer set"),
    ],
)
def test_each_error_names_file_line_column_and_a_fix(write_story, text, line, col, fragment):
    path = write_story(text)
    with pytest.raises(InputError) as info:
        load_story(path)
    err = info.value
    assert (err.path, err.line, err.col) == (str(path), line, col), err.format()
    assert fragment in err.format()
    assert err.exit_code == 2


def test_reference_image_must_be_an_image(write_story, tmp_path):
    (tmp_path / "ref.png").write_text("not a png")
    path = write_story("characters:\n  Ann:\n    description: a kid\n    reference: ref.png\npanels: [Ann waves]\n")
    with pytest.raises(InputError, match="not a readable image"):
        load_story(path)


def test_missing_story_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such story file"):
        load_story(tmp_path / "missing.yaml")


def test_shipped_stories_all_load():
    stories = sorted((Path(__file__).parent.parent / "stories").glob("*.*"))
    assert len(stories) >= 3
    for path in stories:
        story = load_story(path)
        assert story.panels
