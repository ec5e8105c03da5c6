"""Long and weighted prompts reach the model whole (compel's chunked encoding); short plain ones as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import storyd.render.generator as generator_module
from storyd.plan.presets import PRESETS
from storyd.plan.render_plan import plan_story
from storyd.render.generator import PanelGenerator
from storyd.render.pipelines import load_pipeline
from storyd.render.prompt_encoding import ChunkedEncoder, prompt_arguments
from storyd.story.loader import load_story
from storyd.story.weighting import is_weighted, plain_text, weighted_fragments

# 120 tokens once the BOS/EOS are set aside: well past one 75-token window.
LONG = ", ".join(["a small red house"] * 23) + ", at last a purple elephant"
OTHER_TAIL = ", ".join(["a small red house"] * 23) + ", at last a green giraffe"


@pytest.fixture(scope="module", params=["tiny", "tiny-sdxl"])
def pipe(request):
    return load_pipeline(PRESETS[request.param], device="cpu")


def test_a1111_weighting_syntax():
    assert weighted_fragments("a (red:1.5) house") == [("a ", 1.0), ("red", 1.5), (" house", 1.0)]
    nested = weighted_fragments("(big (red) house:2)")
    assert [f for f, _ in nested] == ["big ", "red", " house"]
    assert [round(w, 6) for _, w in nested] == [2.0, 2.2, 2.0]
    assert plain_text("a \\(note\\) and an (unclosed paren") == "a (note) and an (unclosed paren"
    assert not is_weighted("a plain prompt, with [brackets] and a ( lone paren")
    assert is_weighted("(x:0.5)") and is_weighted("\\(literal\\)")


def test_the_long_prompt_is_past_one_window(pipe):
    assert len(pipe.tokenizer.tokenize(LONG)) == 120


def test_short_plain_prompts_go_to_the_pipeline_as_text(pipe):
    args = prompt_arguments(pipe, ["a kid waving"], ["blurry"])
    assert args == {"prompt": ["a kid waving"], "negative_prompt": ["blurry"]}


def test_chunked_encoding_of_a_short_prompt_is_the_pipelines_own(pipe):
    """So a short prompt batched with a long one is read as it would be alone."""
    with torch.inference_mode():
        ours = ChunkedEncoder(pipe).encode("a kid waving on the beach")
        theirs = pipe.encode_prompt("a kid waving on the beach", device="cpu", num_images_per_prompt=1,
                                    do_classifier_free_guidance=False)[0]
    assert ours.shape == theirs.shape == (1, 77, theirs.shape[-1])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_a_long_prompt_reaches_the_model_whole(pipe):
    with torch.inference_mode():
        args = prompt_arguments(pipe, [LONG, "a kid"], ["blurry", "blurry"])
        other = prompt_arguments(pipe, [OTHER_TAIL], None)
    embeds = args["prompt_embeds"]
    assert embeds.shape[:2] == (2, 154) and args["negative_prompt_embeds"].shape == embeds.shape
    # the words past the first window change the second chunk, and only it
    torch.testing.assert_close(embeds[:1, :77], other["prompt_embeds"][:, :77])
    assert not torch.allclose(embeds[:1, 77:], other["prompt_embeds"][:, 77:])
    if pipe.__class__.__name__.endswith("XLPipeline"):
        assert args["pooled_prompt_embeds"].shape[0] == 2 == args["negative_pooled_prompt_embeds"].shape[0]
    else:
        assert "pooled_prompt_embeds" not in args


def test_weighting_changes_the_embeddings_and_weight_one_does_not(pipe):
    encoder = ChunkedEncoder(pipe)
    with torch.inference_mode():
        plain = encoder.encode("a red house")
        unit = encoder.encode("a (red:1) house")
        heavy = encoder.encode("a (red:1.5) house")
    torch.testing.assert_close(unit, plain)
    assert not torch.allclose(heavy, plain)


def test_a_long_prompt_is_drawn_with_csa(pipe, write_story, monkeypatch):
    seen = []

    def spy(*args):
        seen.append(prompt_arguments(*args))
        return seen[-1]

    monkeypatch.setattr(generator_module, "prompt_arguments", spy)
    model = "tiny-sdxl" if pipe.__class__.__name__.endswith("XLPipeline") else "tiny"
    story = load_story(write_story(
        f"model: {model}\nsteps: 2\nconsistency:\n  id_panels: 1\ncharacters:\n  Mia: {LONG}\n"
        "panels:\n  - Mia waving\n  - Mia (running:1.3)\n"
    ))
    plan = plan_story(story, tokenizer=pipe.tokenizer)
    assert [j.prompt.chunks for j in plan.jobs] == [2, 2] and [j.role for j in plan.jobs] == ["reference", "read"]
    images = PanelGenerator(pipe, plan, device="cpu").draw()
    assert sorted(images) == [0, 1] and np.asarray(images[1]).std() > 0
    assert [a["prompt_embeds"].shape[1] for a in seen] == [154, 154]  # the reference batch, then the read batch
