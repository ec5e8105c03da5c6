"""The attribute reader and the metrics built on it."""

from __future__ import annotations

import random

import pytest

from storyd.toy.metrics import identity_agreement, prompt_adherence
from storyd.toy.reader import DEFAULT_DIR, AttributeReader, images_to_tensor, scene_labels, tensor_to_images
from storyd.toy.reader_train import evaluate_reader
from storyd.toy.world import CharacterLook, Figure, Scene, random_scene, render

shipped = pytest.mark.skipif(not (DEFAULT_DIR / "model.safetensors").exists(), reason="reader not trained yet")


@pytest.fixture(scope="module")
def reader():
    return AttributeReader.load()


def test_tensor_to_images_inverts_images_to_tensor():
    images = [render(random_scene(random.Random(seed))) for seed in (3, 4)]
    back = tensor_to_images(images_to_tensor(images))
    assert [im.size for im in back] == [(64, 64)] * 2
    assert [im.tobytes() for im in back] == [im.tobytes() for im in images]


@shipped
def test_shipped_reader_reads_held_back_renders(reader):
    acc = evaluate_reader(reader, count=300, seed=424242)
    assert acc["setting"] >= 0.95 and acc["count"] >= 0.9
    for attr in ("shirt_colour", "hair_colour", "hat", "trousers", "action", "skin"):
        assert acc[f"char0.{attr}"] >= 0.8, (attr, acc)


@shipped
def test_reader_output_shape_follows_the_image(reader):
    look = CharacterLook(shirt_colour="green", hair_colour="red", hat=True)
    one = Scene("beach", (Figure(look, "waving", 32, 58, 40),), detail_seed=1)
    two = Scene("room", (Figure(look, "sitting", 18, 58, 34), Figure(CharacterLook(), "standing", 46, 58, 34)))
    got = reader.read([render(one), render(two)])
    assert got[0]["setting"] == "beach" and got[0]["count"] == 1 and len(got[0]["figures"]) == 1
    assert got[0]["figures"][0]["shirt_colour"] == "green" and got[0]["figures"][0]["hat"] is True
    assert got[1]["count"] == 2 and len(got[1]["figures"]) == 2


def test_scene_labels_mark_empty_slots():
    labels = scene_labels(random_scene(random.Random(0), two_prob=0.0))
    assert labels["count"] == 0 and labels["char1.shirt_colour"] == -1 and labels["char0.shirt_colour"] >= 0


class _FakeReader:
    """Reads back whatever attributes were planted in a lookup by image identity."""

    def __init__(self, table):
        self.table = table

    def read(self, images):
        return [self.table[id(im)] for im in images]


def test_prompt_adherence_counts_each_named_attribute():
    ims = [object(), object(), object()]
    table = {
        id(ims[0]): {"setting": "beach", "figures": [{"shirt_colour": "red", "action": "waving"}]},
        id(ims[1]): {"setting": "forest", "figures": [{"shirt_colour": "blue", "action": "waving"}]},
        id(ims[2]): {"setting": "beach", "figures": []},
    }
    named = [{"setting": "beach", "shirt_colour": "red"},
             {"setting": "beach", "figures": [{"shirt_colour": "blue", "action": "sitting"}]},
             {"shirt_colour": "red"}]
    got = prompt_adherence(ims, named, reader=_FakeReader(table))
    assert got["per_attribute"] == {"action": 0.0, "setting": 0.5, "shirt_colour": pytest.approx(2 / 3)}
    assert got["counts"] == {"action": 1, "setting": 2, "shirt_colour": 3}
    with pytest.raises(ValueError):
        prompt_adherence(ims, named[:2], reader=_FakeReader(table))


def test_identity_agreement_checks_only_unnamed_attributes():
    base = CharacterLook().as_dict()
    ims = [object() for _ in range(3)]
    table = {id(ims[0]): {"figures": [{**base, "shirt_colour": "red"}]},
             id(ims[1]): {"figures": [{**base, "shirt_colour": "blue"}]},
             id(ims[2]): {"figures": [{**base, "shirt_colour": "blue", "hat": True}]}}
    fake = _FakeReader(table)
    free_shirt = identity_agreement([ims], [[{}, {}, {}]], reader=fake)
    assert free_shirt["pairs"] == 3
    assert free_shirt["per_attribute"]["shirt_colour"] == pytest.approx(1 / 3)
    assert free_shirt["per_attribute"]["hat"] == pytest.approx(1 / 3)
    assert free_shirt["all"] == pytest.approx(0.0)
    named_shirt_and_hat = identity_agreement([ims], [[{"shirt_colour": "red"}, {"hat": False}, {}]], reader=fake)
    assert named_shirt_and_hat["all"] == 1.0 and "shirt_colour" not in named_shirt_and_hat["per_attribute"]


@shipped
def test_metrics_on_renders_with_the_real_reader(reader):
    rng = random.Random(5)
    scenes = [random_scene(rng, two_prob=0.0) for _ in range(40)]
    named = [{"setting": s.setting, "shirt_colour": s.figures[0].look.shirt_colour} for s in scenes]
    got = prompt_adherence([render(s) for s in scenes], named, reader=reader)
    assert got["per_attribute"]["setting"] >= 0.95 and got["per_attribute"]["shirt_colour"] >= 0.9
    look = CharacterLook(shirt_colour="purple", hair_colour="blond", glasses=True)
    panels = [("beach", "waving", 24), ("city", "running", 40), ("snow", "standing", 32)]
    story = [render(Scene(st, (Figure(look, act, x, 58, 40),), detail_seed=i)) for i, (st, act, x) in enumerate(panels)]
    agree = identity_agreement([story], [[{"setting": "beach"}, {}, {}]], reader=reader)
    assert agree["per_attribute"]["shirt_colour"] == 1.0 and agree["per_attribute"]["hair_colour"] == 1.0
