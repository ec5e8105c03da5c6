"""The toy world's language: character phrases and scene captions over a fixed vocabulary.

Grammar (every part optional except "a kid")::

    kid      := "a kid" [with-part] [in-part] [wearing-part]
    with     := "with" ITEM ("and" ITEM)*   ITEM: "<style> <colour> hair" | "<tone> skin" | "no hat" | "no glasses"
    in       := "in" ITEM ("and" ITEM)*     ITEM: "a|an <colour> <pattern> shirt" | "<colour> trousers"
    wearing  := "wearing" ITEM ("and" ITEM)* ITEM: "a hat" | "glasses"
    caption  := kid [action] [setting]                                   (one character)
              | kid [action] "and" kid [action] [setting]                (two, left one first)

An attribute the caption leaves out is free: the model chooses it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from storyd.toy.world import (
    ACTIONS,
    HAIR_COLOURS,
    HAIR_STYLES,
    LOOK_ATTRS,
    PATTERNS,
    SETTINGS,
    SHIRT_COLOURS,
    SKIN_TONES,
    TROUSERS_COLOURS,
    CharacterLook,
    Scene,
)

_GLUE = {"a", "an", "kid", "with", "and", "in", "wearing", "hair", "skin", "shirt", "trousers", "hat",
         "glasses", "no", "on", "the", "under", "sky", "street", "field"}
VOCABULARY: frozenset[str] = frozenset(
    _GLUE
    | set(ACTIONS)
    | set(HAIR_COLOURS) | set(HAIR_STYLES) | set(SKIN_TONES) | set(SHIRT_COLOURS) | set(PATTERNS)
    | set(TROUSERS_COLOURS)
    | {w for phrase in SETTINGS.values() for w in phrase.split()}
)


def describe(look: CharacterLook, attrs: Iterable[str] = LOOK_ATTRS) -> str:
    """A phrase naming ``attrs`` of ``look``, e.g. "a kid with red hair in a blue striped shirt".

    ``attrs`` is any subset of ``LOOK_ATTRS``; the order of the phrase is fixed by the grammar.
    """
    named = set(attrs)
    unknown = named - set(LOOK_ATTRS)
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)}; choose from {LOOK_ATTRS}")
    with_items, in_items, wearing_items = [], [], []
    hair = [getattr(look, a) for a in ("hair_style", "hair_colour") if a in named]
    if hair:
        with_items.append(" ".join(hair) + " hair")
    if "skin" in named:
        with_items.append(f"{look.skin} skin")
    shirt = [getattr(look, a) for a in ("shirt_pattern", "shirt_colour") if a in named]
    if shirt:  # "a blue striped shirt" reads better than "a striped blue shirt"
        words = [look.shirt_colour] if "shirt_colour" in named else []
        words += [look.shirt_pattern] if "shirt_pattern" in named else []
        article = "an" if words[0][0] in "aeiou" else "a"
        in_items.append(f"{article} " + " ".join(words) + " shirt")
    if "trousers" in named:
        in_items.append(f"{look.trousers} trousers")
    for attr, thing in (("hat", "a hat"), ("glasses", "glasses")):
        if attr in named and getattr(look, attr):
            wearing_items.append(thing)
        elif attr in named:
            with_items.append(f"no {attr}")
    parts = ["a kid"]
    for word, items in (("with", with_items), ("in", in_items), ("wearing", wearing_items)):
        if items:
            parts.append(f"{word} " + " and ".join(items))
    return " ".join(parts)


def choose_named(scene: Scene, rng: random.Random, *, name_prob: float = 0.5) -> dict:
    """Pick which attributes a caption names: ``{"setting": bool, "figures": [{"attrs": [...], "action": bool}]}``."""
    return {
        "setting": rng.random() < 0.85,
        "figures": [
            {"attrs": [a for a in LOOK_ATTRS if rng.random() < name_prob], "action": rng.random() < 0.75}
            for _ in scene.figures
        ],
    }


def write_caption(scene: Scene, named: dict) -> str:
    """The caption of ``scene`` naming exactly what ``named`` (from ``choose_named``) says."""
    words = []
    for i, (fig, n) in enumerate(zip(scene.figures, named["figures"])):
        if i:
            words.append("and")
        words.append(describe(fig.look, n["attrs"]))
        if n["action"]:
            words.append(fig.action)
    if named["setting"]:
        words.append(SETTINGS[scene.setting])
    return " ".join(words)


def named_attributes(scene: Scene, named: dict) -> dict:
    """The values a caption names, as the metrics expect: setting, and per figure action + look attributes."""
    out: dict = {"figures": []}
    if named["setting"]:
        out["setting"] = scene.setting
    for fig, n in zip(scene.figures, named["figures"]):
        values = {a: getattr(fig.look, a) for a in n["attrs"]}
        if n["action"]:
            values["action"] = fig.action
        out["figures"].append(values)
    return out


def caption(scene: Scene, rng: random.Random) -> str:
    """A random caption of ``scene``: each look attribute is named about half the time."""
    return write_caption(scene, choose_named(scene, rng))


def story_captions(scenes: Sequence[Scene], rng: random.Random, *, name_prob: float = 0.5) -> list[str]:
    """Captions for the panels of one story (``world.story_scenes``): the kid is described the
    same way in every panel, as a story's character description is; action and setting vary."""
    attrs = [a for a in LOOK_ATTRS if rng.random() < name_prob]
    return [write_caption(scene, {"setting": rng.random() < 0.9,
                                  "figures": [{"attrs": attrs, "action": rng.random() < 0.9}]})
            for scene in scenes]
