"""The settings a run uses, resolved once, the same way for the CLI and for Python callers.

Consistent Self-Attention settings come from three places, each over the one before: the
model's own (the published ones, or what its model.json changes), the story's `consistency:`
entries, and the caller's overrides (the CLI's options). The bounds of every value live on
`ConsistencySettings` itself, so whichever layer sets a value, it is checked the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from storyd.errors import InputError
from storyd.plan.presets import Preset, model_consistency
from storyd.story.model import ConsistencySettings, Story

SETTING_NAMES = tuple(f.name for f in dataclasses.fields(ConsistencySettings))


def resolve_consistency(
    preset: Preset, story: Story, overrides: Mapping[str, object] | None = None
) -> ConsistencySettings:
    """The model's settings <- those the story names <- `overrides` (only the fields the caller
    sets, by name: e.g. `{"sampling_rate": (0.7,)}`). A value out of bounds raises `SettingError`
    naming the field."""
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, Mapping):
        raise TypeError(
            f"overrides must map setting names to values, not {type(overrides).__name__}: "
            "a whole ConsistencySettings would hide the model's and the story's values"
        )
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise InputError(f"unknown consistency setting '{unknown[0]}'", f"use one of: {', '.join(SETTING_NAMES)}")
    named = {key: getattr(story.consistency, key) for key in story.consistency_keys}
    return dataclasses.replace(model_consistency(preset), **{**named, **overrides})
