"""The toy text encoder learns to read captions back into the attributes they name."""

from __future__ import annotations

import random

import numpy as np
import torch

from storyd.render.tokenizer import load_clip_tokenizer
from storyd.toy.captions import write_caption
from storyd.toy.model_config import ToyModelConfig, build_text_encoder
from storyd.toy.text_pretrain import HEADS, caption_labels, pretrain_text_encoder
from storyd.toy.train import tokenize
from storyd.toy.world import CharacterLook, Figure, Scene, random_scene
from storyd.weights.paths import storyd_home

NAMES = [name for name, _ in HEADS]


def _label(labels: list[int], name: str):
    """The value a label vector gives head ``name``, or None where the caption is silent."""
    values = dict(HEADS)[name]
    k = labels[NAMES.index(name)]
    return values[k - 1] if k else None


def test_labels_say_exactly_what_the_caption_names():
    look = CharacterLook(hair_colour="red", shirt_colour="green", hat=True)
    scene = Scene("forest", (Figure(look, "waving"), Figure(CharacterLook(), "sitting", x=50)))
    named = {"setting": True, "figures": [{"attrs": ["shirt_colour", "hat"], "action": False},
                                          {"attrs": ["hair_colour"], "action": True}]}
    assert write_caption(scene, named) == ("a kid in a green shirt wearing a hat and a kid with brown hair sitting "
                                           "in a forest")
    labels = caption_labels(scene, named)
    said = {name: _label(labels, name) for name in NAMES if _label(labels, name) is not None}
    assert said == {"setting": "forest", "figures": 2, "0.shirt_colour": "green", "0.hat": True,
                    "1.hair_colour": "brown", "1.action": "sitting"}
    assert caption_labels(scene, None) == [0] * len(HEADS)


def test_pretraining_lowers_the_readback_loss(recorder):
    tokenizer = load_clip_tokenizer(storyd_home())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = build_text_encoder(ToyModelConfig.tiny())
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(64)]
    pretrain_text_encoder(encoder, lambda texts: tokenize(tokenizer, texts), scenes, seed=0, steps=60, batch=16,
                          lr=3e-3, empty_prob=0.1, progress=recorder)
    assert [u[:4] for u in recorder.updates] == [("text", i + 1, 60, "steps") for i in range(60)]
    losses = [float(detail.removeprefix("loss ")) for *_, detail in recorder.updates]
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])  # measured: 0.71
