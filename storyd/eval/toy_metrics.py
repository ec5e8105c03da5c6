"""Offline metrics for runs of the embedded toy model, read by its attribute reader.

The base prompt of a toy panel is a caption in the toy grammar (storyd.toy.captions):
``parse_toy_prompt`` recovers what it names, per character, left to right. The
reader then says what each panel shows. Both scores are per story:

- prompt adherence: named attributes (setting, and per character action and look)
  the reader finds, over all named attributes;
- identity agreement: over pairs of panels showing the same character, the share
  where the reader finds the same value for every look attribute the character's
  description leaves free (the model's choice, which CSA should keep).
"""

from __future__ import annotations

import re

from storyd.errors import WeightsError
from storyd.eval.runs import StoryRun
from storyd.toy.metrics import look_pairs
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
)

_KID = re.compile(r"\ba kid\b")


def _alt(words) -> str:
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


_HAIR = re.compile(rf"\b((?:(?:{_alt((*HAIR_STYLES, *HAIR_COLOURS))})\s+)+)hair\b")
_SKIN = re.compile(rf"\b({_alt(SKIN_TONES)})\s+skin\b")
_SHIRT = re.compile(rf"\b((?:(?:{_alt((*SHIRT_COLOURS, *PATTERNS))})\s+)+)shirt\b")
_TROUSERS = re.compile(rf"\b({_alt(TROUSERS_COLOURS)})\s+trousers\b")
_ACTION = re.compile(rf"\b({_alt(ACTIONS)})\b")


def parse_toy_prompt(text: str) -> dict:
    """What a toy caption names: ``{"setting"?: name, "figures": [{attr: value, "action"?: verb}, ...]}``."""
    text = " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())
    named: dict = {"figures": []}
    for name, phrase in SETTINGS.items():
        if re.search(rf"\b{re.escape(phrase)}\b", text):
            named["setting"] = name
            text = text.replace(phrase, " ")
            break
    starts = [m.start() for m in _KID.finditer(text)]
    for k, start in enumerate(starts):
        segment = text[start + len("a kid"): starts[k + 1] if k + 1 < len(starts) else len(text)]
        named["figures"].append(_parse_figure(segment))
    return named


def _parse_figure(segment: str) -> dict:
    figure: dict = {}
    if m := _HAIR.search(segment):
        for word in m.group(1).split():
            figure["hair_style" if word in HAIR_STYLES else "hair_colour"] = word
    if m := _SKIN.search(segment):
        figure["skin"] = m.group(1)
    if m := _SHIRT.search(segment):
        for word in m.group(1).split():
            figure["shirt_pattern" if word in PATTERNS else "shirt_colour"] = word
    if m := _TROUSERS.search(segment):
        figure["trousers"] = m.group(1)
    for thing in ("hat", "glasses"):
        if re.search(rf"\bno {thing}\b", segment):
            figure[thing] = False
        elif re.search(rf"\bwearing\b.*\b{thing}\b", segment):
            figure[thing] = True
    if m := _ACTION.search(segment):
        figure["action"] = m.group(1)
    return figure


def load_reader():
    from storyd.toy.reader import DEFAULT_DIR, AttributeReader

    if not (DEFAULT_DIR / "model.safetensors").is_file():
        raise WeightsError(f"the toy attribute reader is not in this checkout ({DEFAULT_DIR})",
                           "train it with `python -m storyd.toy.reader_train`, or restore it with git")
    return AttributeReader.load(DEFAULT_DIR)


def toy_scores(story: StoryRun, images: list, reader) -> dict[str, float]:
    """``{"toy-adherence": share, "toy-identity": share}`` for one story (NaN where nothing to score)."""
    from storyd.toy.metrics import prompt_adherence

    named = [parse_toy_prompt(p.base_prompt) for p in story.panels]
    adherence = prompt_adherence(images, named, reader=reader)
    total = sum(adherence["counts"].values())
    hits = sum(adherence["per_attribute"][a] * n for a, n in adherence["counts"].items())
    return {"toy-adherence": hits / total if total else float("nan"),
            "toy-identity": _identity(story, named, reader.read(images))}


def _identity(story: StoryRun, named: list[dict], readings: list[dict]) -> float:
    """Share of same-character panel pairs that agree on every free look attribute."""
    looks: dict[str, list[dict]] = {}
    said: dict[str, set[str]] = {}
    for panel, want, seen in zip(story.panels, named, readings):
        if len(want["figures"]) != len(panel.characters):
            continue  # the prompt does not say who stands where: no slot to read
        for slot, name in enumerate(panel.characters):
            said.setdefault(name, set()).update(want["figures"][slot])
            looks.setdefault(name, []).append(seen["figures"][slot] if slot < len(seen["figures"]) else {})
    agree = pairs = 0
    for name, seen_looks in looks.items():
        free = [a for a in LOOK_ATTRS if a not in said[name]]
        for found, same in look_pairs(seen_looks, free):
            pairs += 1
            agree += int(found and all(same))
    return agree / pairs if pairs else float("nan")
