"""Scores over generated toy-world images, both read by the attribute reader.

``named`` attribute dicts have the form ``captions.named_attributes`` returns,
``{"setting": "beach", "figures": [{"shirt_colour": "red", "action": "waving"}]}``;
a flat dict (``{"setting": "beach", "shirt_colour": "red"}``) means one character.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import combinations
from typing import Protocol

from storyd.toy.world import LOOK_ATTRS


class Reader(Protocol):
    def read(self, images) -> list[dict]: ...


def _figures(named: dict) -> list[dict]:
    if "figures" in named:
        return list(named["figures"])
    return [{k: v for k, v in named.items() if k != "setting"}]


def _default_reader(reader: Reader | None) -> Reader:
    if reader is not None:
        return reader
    from storyd.toy.reader import AttributeReader

    return AttributeReader.load()


def prompt_adherence(images: Sequence, named: Sequence[dict], *, reader: Reader | None = None) -> dict:
    """Fraction of images showing each attribute their prompt names.

    Returns ``{"per_attribute": {attr: fraction}, "counts": {attr: n}}``. A figure the reader
    does not find (it read fewer characters than the prompt names) counts as wrong.
    """
    if len(images) != len(named):
        raise ValueError(f"{len(images)} images but {len(named)} attribute dicts")
    readings = _default_reader(reader).read(list(images))
    hits: dict[str, int] = {}
    counts: dict[str, int] = {}
    for seen, want in zip(readings, named):
        checks = [("setting", seen["setting"] == want["setting"])] if "setting" in want else []
        for i, fig in enumerate(_figures(want)):
            got = seen["figures"][i] if i < len(seen["figures"]) else {}
            checks += [(attr, got.get(attr) == value) for attr, value in fig.items()]
        for attr, ok in checks:
            counts[attr] = counts.get(attr, 0) + 1
            hits[attr] = hits.get(attr, 0) + int(ok)
    return {"per_attribute": {a: hits[a] / counts[a] for a in sorted(counts)}, "counts": dict(sorted(counts.items()))}


def look_pairs(looks: Sequence[dict], free: Sequence[str]) -> Iterator[tuple[bool, list[bool]]]:
    """For every pair of read looks (``{}`` where the reader found no figure): whether both show
    a figure, and per attribute of ``free`` whether the two agree on it."""
    for a, b in combinations(looks, 2):
        yield bool(a) and bool(b), [a.get(attr) == b.get(attr) for attr in free]


def identity_agreement(panels_by_story: Sequence[Sequence], named_by_story: Sequence[Sequence[dict]], *,
                       reader: Reader | None = None) -> dict:
    """How often two panels of one story show the same character where the prompts leave it free.

    For each story, the free attributes are the look attributes that no panel's prompt names
    for its (single) character. A pair of panels agrees when the reader finds the same value
    for every free attribute. Returns ``{"all": fraction of agreeing pairs, "per_attribute":
    {attr: fraction of pairs agreeing on it}, "pairs": n}``.
    """
    if len(panels_by_story) != len(named_by_story):
        raise ValueError(f"{len(panels_by_story)} stories of panels but {len(named_by_story)} of attributes")
    reader = _default_reader(reader)
    agree_all = pairs = 0
    per_attr_hits: dict[str, int] = {}
    per_attr_pairs: dict[str, int] = {}
    for panels, named in zip(panels_by_story, named_by_story):
        if len(panels) != len(named):
            raise ValueError("every panel needs its attribute dict")
        named_attrs = {a for n in named for fig in _figures(n)[:1] for a in fig}
        free = [a for a in LOOK_ATTRS if a not in named_attrs]
        looks = [r["figures"][0] if r["figures"] else {} for r in reader.read(list(panels))]
        for _, same in look_pairs(looks, free):
            pairs += 1
            agree_all += int(all(same))
            for attr, ok in zip(free, same):
                per_attr_pairs[attr] = per_attr_pairs.get(attr, 0) + 1
                per_attr_hits[attr] = per_attr_hits.get(attr, 0) + int(ok)
    return {
        "all": agree_all / pairs if pairs else float("nan"),
        "per_attribute": {a: per_attr_hits[a] / per_attr_pairs[a] for a in LOOK_ATTRS if a in per_attr_pairs},
        "pairs": pairs,
    }
