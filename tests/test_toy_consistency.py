"""On the shipped toy model, CSA makes a kid's panels agree more on what the prompts leave free."""

from __future__ import annotations

import re

import pytest

from storyd.plan.presets import ASSETS, get_preset, model_consistency
from storyd.render.pipelines import load_pipeline
from storyd.toy.consistency import make_cases, measure, score, world_stories

pytestmark = pytest.mark.skipif(not (ASSETS / "toy" / "unet").is_dir(), reason="toy model not shipped")


def test_csa_makes_panels_agree_on_what_the_prompts_leave_free():
    preset = get_preset("toy")
    settings = model_consistency(preset)
    cases = make_cases(3, seed=7, panels=(4, 4))  # 18 panel pairs, about 25 s on 2 cores
    rows = {row["mode"]: row for row in measure(load_pipeline(preset), cases, settings, modes=("off", "read"))}
    off, on = rows["off"], rows["read"]
    # Measured here: mean per-attribute agreement 0.47 off, 0.83 read; all free attributes 0.06, 0.44;
    # setting adherence 1.00 both (0.97 in read mode over the 20 stories of `bench toy`). With the
    # reference at the story's guidance, 0.92 and 0.83 read: 18 pairs are few (`bench toy`: 0.54 -> 0.58).
    assert on["agreement_mean_attr"] >= off["agreement_mean_attr"] + 0.2, (off, on)
    assert on["agreement"] > off["agreement"], (off, on)
    assert on["adherence_setting"] >= off["adherence_setting"] - 0.2, (off, on)


def test_the_world_drawn_with_one_look_per_story_agrees_through_the_vae():
    """The calibration rows of `bench toy`: perfect consistency reads as such (the reader and the
    metric agree with the world), and the model's VAE round trip costs little of it."""
    cases = make_cases(6, seed=7)
    clean = score(world_stories(cases), cases)
    through_vae = score(world_stories(cases, vae=load_pipeline(get_preset("toy")).vae), cases)
    # Measured here: agreement 1.00 and 0.91, mean per attribute 1.00 and 0.98; setting adherence 1.00
    # both. Before the decoder phase of training the VAE read 0.67 and 0.92 (glasses blurred away).
    assert clean["agreement"] >= 0.9 and clean["adherence_setting"] == 1.0, clean
    assert through_vae["agreement"] >= 0.8 and through_vae["agreement_mean_attr"] >= 0.95, through_vae
    assert through_vae["adherence_setting"] >= 0.95, through_vae


def test_panels_read_the_look_of_a_bank_written_from_an_image():
    """`read-world` (a bench row): every panel reads a bank written from the world's render of the
    first panel, so the panels show that render's shirt colour, which no prompt names."""
    from storyd.toy.consistency import READ_WORLD, draw_cases
    from storyd.toy.reader import AttributeReader

    preset = get_preset("toy")
    cases = make_cases(3, seed=7, panels=(4, 4))
    stories, _ = draw_cases(load_pipeline(preset), cases, READ_WORLD, model_consistency(preset))
    reader = AttributeReader.load()
    wanted = [reader.read([s[0]])[0]["figures"][0]["shirt_colour"] for s in world_stories(cases)]
    drawn = [[r["figures"][0]["shirt_colour"] if r["figures"] else None for r in reader.read(s)] for s in stories]
    hits = sum(colour == want for want, colours in zip(wanted, drawn) for colour in colours)
    # Measured here: 11 of 12, and 3 of 12 with an empty bank (six colours: chance is 2 of 12).
    assert hits >= 9, (wanted, drawn)


def test_naming_the_look_spells_out_the_free_attributes_and_scores_them_still():
    """`bench toy`'s last rows: every prompt names the whole look, yet the measure still scores
    the four attributes the original prompts leave free."""
    from storyd.toy.consistency import name_the_look
    from storyd.toy.world import PATTERNS, SHIRT_COLOURS

    cases = make_cases(6, seed=3)
    named = name_the_look(cases)
    texts = [case.story.characters["Kid"].description for case in named]
    for case, text in zip(cases, texts):
        fixed = case.named[0]["figures"][0]
        assert f"{fixed['hair_style']} {fixed['hair_colour']} hair" in text and f"{fixed['trousers']} trousers" in text
        assert re.search(rf"an? ({'|'.join(SHIRT_COLOURS)}) ({'|'.join(PATTERNS)}) shirt", text), text
        assert ("no hat" in text or "a hat" in text) and "glasses" in text, text
    assert [c.named for c in named] == [c.named for c in cases]
    assert [c.story.panels for c in named] == [c.story.panels for c in cases]
    assert len(set(texts)) > 1 and texts == [c.story.characters["Kid"].description for c in name_the_look(cases)]
