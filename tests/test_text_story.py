import yaml

from storyd.errors import InputError
from storyd.story.loader import load_story
from storyd.story.prompts import build_prompts
from storyd.story.text_format import story_to_yaml

TEXT = """\
[Bob] a man with short black hair, wearing a black suit
[Alice] a woman with long red hair, wearing a green dress

[Bob] at home, reading the newspaper #The paper says there is treasure in the forest.
// a comment line
[NC] a dark forest path at dusk #Night # falls.
[Bob] [Alice] walking together through the forest
"""


def test_published_format_reads_characters_panels_and_captions(write_story):
    story = load_story(write_story(TEXT, "forest.txt"))
    assert {n: c.description for n, c in story.characters.items()} == {
        "Bob": "a man with short black hair, wearing a black suit",
        "Alice": "a woman with long red hair, wearing a green dress",
    }
    assert [p.characters for p in story.panels] == [("Bob",), (), ("Bob", "Alice")]
    assert story.panels[0].caption == "The paper says there is treasure in the forest."
    assert story.panels[1].caption == "falls."  # the text after the last '#'
    assert story.panels[1].prompt == "a dark forest path at dusk #Night"
    assert story.panels[2].caption is None and story.panels[2].line == 7


def test_convert_round_trips_to_an_equivalent_yaml_story(write_story, tmp_path):
    story = load_story(write_story(TEXT, "forest.txt"))
    yaml_path = tmp_path / "forest.yaml"
    yaml_path.write_text(story_to_yaml(story), encoding="utf-8")
    again = load_story(yaml_path)
    assert [p.characters for p in again.panels] == [p.characters for p in story.panels]
    assert [p.caption for p in again.panels] == [p.caption for p in story.panels]
    assert again.characters.keys() == story.characters.keys()
    assert yaml.safe_load(yaml_path.read_text())["panels"][1]["characters"] == []


def test_undefined_tag_points_at_its_column(write_story):
    path = write_story("[Bob] a man\n\n[Bob] runs\nthen [Eve] waves\n", "s.txt")
    try:
        load_story(path)
    except InputError as err:
        assert (err.line, err.col) == (4, 6)
        assert "[Eve]" in err.message
    else:
        raise AssertionError("no error")


def test_missing_blank_line_is_explained(write_story):
    path = write_story("[Bob] a man\n[Bob] runs\n", "s.txt")
    try:
        load_story(path)
    except InputError as err:
        assert "blank line" in err.message
    else:
        raise AssertionError("no error")


def test_escaped_brackets_in_a_text_story_are_kept_as_punctuation(write_story):
    story = load_story(write_story("[Bob] a man\n\n[Bob] holds a sign: \\[SALE]\n", "s.txt"))
    assert story.panels[0].characters == ("Bob",)
    assert build_prompts(story)[0].prompt.endswith("holds a sign: [SALE]")
