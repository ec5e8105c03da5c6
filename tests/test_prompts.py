import pytest

from storyd.errors import InputError
from storyd.story.loader import load_story
from storyd.story.prompts import build_prompts
from storyd.story.styles import STYLES

STORY = """
style: {style}
negative: blurry
characters:
  Mia: a kid with red hair
  Sam: a kid in a green shirt
panels:
  - Mia waving on the beach
  - "[Sam] sitting in a room"
  - prompt: running on a city street
    characters: [Mia, Sam]
  - "[NC] a snowy field"
"""


def test_names_become_descriptions(write_story):
    prompts = build_prompts(load_story(write_story(STORY.format(style="none"))))
    assert [p.prompt for p in prompts] == [
        "a kid with red hair waving on the beach",
        "a kid in a green shirt sitting in a room",
        "a kid with red hair and a kid in a green shirt, running on a city street",
        "a snowy field",
    ]
    assert prompts[0].negative == "blurry" and prompts[2].characters == ("Mia", "Sam")


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_wraps_the_prompt_and_adds_its_negative(write_story, style):
    prompt = build_prompts(load_story(write_story(STORY.format(style=style))))[0]
    assert "a kid with red hair waving on the beach" in prompt.prompt
    assert prompt.base == "a kid with red hair waving on the beach"
    assert prompt.negative.startswith("blurry")
    if style != "none":
        assert prompt.prompt != prompt.base and len(prompt.negative) > len("blurry")


def test_a_long_weighted_prompt_counts_the_tokens_the_encoder_reads(tokenizer, write_story):
    text = "panels:\n  - " + " ".join(["a red house"] * 25) + " finally the (purple:1.3) elephant\n"
    prompt = build_prompts(load_story(write_story(text)), tokenizer)[0]
    assert prompt.tokens == 79 and prompt.chunks == 2  # the weighting syntax is not read as words
    assert build_prompts(load_story(write_story("panels: [a short prompt]\n")), tokenizer)[0].chunks == 1
    assert build_prompts(load_story(write_story(text)))[0].tokens is None


def test_tokenizer_is_the_real_clip_bpe(tokenizer):
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_escaped_brackets_are_punctuation_not_characters(write_story):
    story = load_story(
        write_story(
            "characters:\n  Mia: a kid with red hair\npanels:\n"
            "  - '\\[One delicate fairy, glowing] flies past [Mia]'\n"
            "  - \"a sign reading \\\\[closed\\\\]\"\n"
        )
    )
    assert [p.characters for p in story.panels] == [("Mia",), ()]
    prompts = build_prompts(story)
    assert prompts[0].prompt == "[One delicate fairy, glowing] flies past a kid with red hair"
    assert prompts[1].prompt == "a sign reading [closed]"


def test_an_unknown_bracketed_phrase_says_how_to_escape_it(write_story):
    with pytest.raises(InputError) as info:
        load_story(write_story("panels:\n  - 'a wall with [One delicate fairy, glowing] painted on it'\n"))
    assert "\\[" in info.value.format() and "names [One delicate fairy, glowing]" in info.value.format()
