"""Which LoRAs a plan uses, and each panel's set.

Each panel is drawn with the story's LoRAs plus those of every character it shows (a panel
showing two characters activates the union; the same file twice adds its weights). Panels
with different LoRA sets are never drawn in one batch, so a panel's pixels depend only on its
own inputs, as on resume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storyd.errors import InputError
from storyd.story.model import Lora, Story

PanelLoras = tuple[tuple[str, float], ...]  # (key, weight) pairs, sorted by key, no zero weights


@dataclass(frozen=True)
class LoraUse:
    """One LoRA as a plan uses it."""

    lora: Lora
    key: str  # what identifies its weights: the file's sha256, or NAME@REVISION for an unpinned lock entry
    sha256: str | None
    character: str | None  # None: the story's, for every panel

    @property
    def adapter(self) -> str:
        return "storyd_" + re.sub(r"\W", "_", self.key)[:24]

    def record(self) -> dict:
        """What the manifest keeps."""
        return {
            "character": self.character,
            "path": str(self.lora.path.resolve()) if self.lora.path else None,
            "name": self.lora.name,
            "sha256": self.sha256,
            "weight": self.lora.weight,
        }


def panel_lora_set(uses: tuple[LoraUse, ...], characters: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """The (key, weight) set of a panel showing ``characters``: the story's LoRAs and theirs."""
    weights: dict[str, float] = {}
    for use in uses:
        if use.character is None or use.character in characters:
            weights[use.key] = weights.get(use.key, 0.0) + use.lora.weight
    return tuple(sorted((k, w) for k, w in weights.items() if w != 0))


def character_loras(uses: tuple[LoraUse, ...], character: str) -> tuple[tuple[str, float], ...]:
    """What a character's bank is drawn under: the set of a panel showing only that character."""
    return panel_lora_set(uses, (character,))


def plan_loras(story: Story, family: str, model: str) -> tuple[tuple[LoraUse, ...], list[PanelLoras]]:
    """The LoRAs the story uses (story-level, then each shown character's), and each panel's set."""
    shown = {name for panel in story.panels for name in panel.characters}
    wanted = [(lora, None) for lora in story.loras]
    wanted += [(lora, name) for name, c in story.characters.items() if name in shown for lora in c.loras]
    uses = tuple(_use(story, lora, character, family, model) for lora, character in wanted)
    return uses, [panel_lora_set(uses, panel.characters) for panel in story.panels]


def _use(story: Story, lora: Lora, character: str | None, family: str, model: str) -> LoraUse:
    from storyd.fsutil import file_sha256

    if lora.path is not None:
        sha = file_sha256(lora.path)
        return LoraUse(lora, sha, sha, character)
    from storyd.weights import load_lock

    entry = load_lock().get(lora.name)
    if entry.family != family:
        raise InputError(
            f"LoRA '{lora.name}' is for {entry.family} models; model '{model}' is {family}",
            f"use a LoRA made for {family}, or another model",
            path=story.path,
            line=lora.line,
            col=lora.col,
        )
    sha = entry.files[0].sha256
    return LoraUse(lora, sha or f"{entry.name}@{entry.revision or 'unpinned'}", sha, character)
