"""The toy world: deterministic drawing, and captions that only say what the picture shows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from storyd.toy.captions import VOCABULARY, caption, choose_named, describe, named_attributes, write_caption
from storyd.toy.world import (
    HAT_RGB,
    SHIRT_COLOURS,
    CharacterLook,
    Figure,
    Scene,
    posed_scene,
    random_scene,
    render,
)


def test_same_seed_same_pixels_and_other_seeds_differ():
    a = [np.asarray(render(random_scene(random.Random(seed)))) for seed in (1, 1, 2, 3)]
    assert a[0].shape == (64, 64, 3)
    assert np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], a[2]) and not np.array_equal(a[2], a[3])


def _count_near(image, rgb, tol=12):
    px = np.asarray(image).astype(int)
    return int((np.abs(px - np.array(rgb)).max(axis=2) <= tol).sum())


def test_attributes_change_the_drawing_where_they_should():
    look = CharacterLook(shirt_colour="red", hat=False)
    fig = Figure(look, "standing", x=32, ground=58, height=40)
    plain = render(Scene("snow", (fig,), detail_seed=5))
    assert _count_near(plain, SHIRT_COLOURS["red"]) > 60  # the shirt is big enough to read
    assert _count_near(plain, HAT_RGB) == 0
    hatted = render(Scene("snow", (Figure(CharacterLook(shirt_colour="red", hat=True), "standing", 32, 58, 40),),
                          detail_seed=5))
    assert _count_near(hatted, HAT_RGB) > 15
    blue = render(Scene("snow", (Figure(CharacterLook(shirt_colour="blue"), "standing", 32, 58, 40),), detail_seed=5))
    assert _count_near(blue, SHIRT_COLOURS["red"]) == 0 and _count_near(blue, SHIRT_COLOURS["blue"]) > 60


def test_invalid_attribute_is_refused():
    with pytest.raises(ValueError, match="shirt_colour"):
        CharacterLook(shirt_colour="teal")


def test_describe_names_exactly_the_chosen_attributes():
    look = CharacterLook(hair_colour="red", hair_style="long", shirt_colour="orange", shirt_pattern="striped",
                         trousers="grey", hat=True, glasses=False)
    assert describe(look, ["hair_colour", "shirt_colour", "shirt_pattern"]) == \
        "a kid with red hair in an orange striped shirt"
    assert describe(look, []) == "a kid"
    assert describe(look) == ("a kid with long red hair and light skin and no glasses "
                              "in an orange striped shirt and grey trousers wearing a hat")
    with pytest.raises(ValueError, match="unknown"):
        describe(look, ["shoes"])


def test_captions_use_the_vocabulary_and_only_true_attributes():
    rng = random.Random(7)
    for _ in range(300):
        scene = random_scene(rng)
        named = choose_named(scene, rng)
        text = write_caption(scene, named)
        assert set(text.split()) <= VOCABULARY, text
        values = named_attributes(scene, named)
        for fig, want in zip(scene.figures, values["figures"]):
            for attr, value in want.items():
                assert value == (fig.action if attr == "action" else getattr(fig.look, attr))
                if attr in ("shirt_colour", "hair_colour", "trousers", "action"):
                    assert str(value) in text.split()
        if "setting" in values:
            assert text.endswith({"beach": "on the beach", "forest": "in a forest", "city": "on a city street",
                                  "snow": "in a snowy field", "night": "under a night sky",
                                  "room": "in a room"}[scene.setting])


def test_captions_vary_what_they_name():
    rng = random.Random(3)
    scene = random_scene(rng, two_prob=0.0)
    texts = {caption(scene, rng) for _ in range(50)}
    assert len(texts) > 20
    assert any(t.startswith("a kid") and len(t.split()) <= 6 for t in texts)


def test_figure_mask_covers_the_figure_and_nothing_else():
    from storyd.toy.world import figure_mask

    scene = Scene("forest", (Figure(CharacterLook(), "standing", x=20, ground=60, height=40),), detail_seed=3)
    mask = np.asarray(figure_mask(scene))
    shoulder_y = 60 - (0.42 + 0.32) * 40
    assert mask[int(shoulder_y) + 4, 20] == 255  # the torso
    assert mask[:, 40:].max() == 0  # the trees and grass right of the kid
    assert 0.05 < (mask > 0).mean() < 0.25


def test_figure_weights_weigh_only_the_latent_cells_a_figure_touches():
    import torch

    from storyd.toy.train import figure_weights

    masks = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    masks[0, 0, 10, 10] = 40  # one partly covered pixel is enough
    weights = figure_weights(masks, 16, 4.0)
    assert weights.shape == (1, 1, 16, 16)
    assert weights[0, 0, 2, 2] == 4.0 and weights.sum() == 4.0 + 255


def test_posed_scene_draws_the_given_kid_action_and_setting():
    look = CharacterLook(shirt_colour="green", glasses=True)
    scenes = [posed_scene(random.Random(seed), look, "jumping", "forest") for seed in range(20)]
    assert all(s.setting == "forest" and len(s.figures) == 1 for s in scenes)
    assert all(s.figures[0].look == look and s.figures[0].action == "jumping" for s in scenes)
    assert len({s.figures[0].x for s in scenes}) == 20  # placed at random
    assert _count_near(render(scenes[0]), SHIRT_COLOURS["green"]) > 20
