"""Reading `storyd comic` output folders for evaluation.

A *run* is what one column of the table describes: either one comic's output folder
(it holds ``manifest.json``) or a folder of them (``storyd.eval.suite`` writes one per
CSA mode), whose stories are the bootstrap's units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from storyd.errors import InputError

MANIFEST = "manifest.json"
_WHAT_TO_DO = "give a folder written by `storyd comic -o DIR`, or a folder of such folders"


@dataclass(frozen=True)
class PanelRecord:
    index: int
    path: Path  # the panel image
    base_prompt: str  # descriptions substituted, no style template
    characters: tuple[str, ...]


@dataclass(frozen=True)
class StoryRun:
    """One rendered story: its manifest, and the panels it lists."""

    folder: Path
    name: str
    model: str
    csa: bool | None  # None: the manifest does not say
    panels: tuple[PanelRecord, ...]
    descriptions: dict[str, str] = field(default_factory=dict)  # character -> description; {}: an older manifest

    def load_images(self) -> list:
        from storyd.images import open_rgb

        return [open_rgb(panel.path, "panel", "redraw it with `storyd comic`") for panel in self.panels]


@dataclass(frozen=True)
class Run:
    """One column of the table: one or more stories drawn with the same settings."""

    folder: Path
    label: str
    stories: tuple[StoryRun, ...]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted({s.model for s in self.stories}))

    @property
    def csa(self) -> str:
        modes = {s.csa for s in self.stories}
        return "mixed" if len(modes) > 1 else {True: "on", False: "off", None: "?"}[modes.pop()]


def load_run(folder: Path | str, label: str | None = None) -> Run:
    """Read a comic output folder, or a folder whose subfolders are comic output folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder", _WHAT_TO_DO)
    if (folder / MANIFEST).is_file():
        stories = (load_story_run(folder),)
    else:
        subs = sorted(p for p in folder.iterdir() if (p / MANIFEST).is_file())
        if not subs:
            raise InputError(f"{folder} is not a storyd output folder (no {MANIFEST} in it or its subfolders)",
                             _WHAT_TO_DO)
        stories = tuple(load_story_run(p) for p in subs)
    names = [s.name for s in stories]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{folder} holds story '{dup}' twice", "keep one output folder per story in a run")
    return Run(folder, label or folder.name, stories)


def load_story_run(folder: Path) -> StoryRun:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg})",
                         "render the story again with `storyd comic`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("panels"), list):
        raise InputError(f"{path} is not a storyd comic manifest (no panel list)", _WHAT_TO_DO)
    if not manifest["panels"]:
        raise InputError(f"{folder} has no finished panels", "finish the render with `storyd comic` first")
    panels = []
    for entry in manifest["panels"]:
        try:
            record = PanelRecord(int(entry["index"]), folder / entry["file"], str(entry["base_prompt"]),
                                 tuple(entry.get("characters", ())))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: a panel entry lacks index, file or base_prompt",
                             "render it again with this version of `storyd comic`") from None
        if not record.path.is_file():
            raise InputError(f"{folder}: panel file {entry['file']} is missing",
                             "render the story again with `storyd comic` to restore it")
        panels.append(record)
    story = manifest.get("story") or {}
    consistency = (manifest.get("settings") or {}).get("consistency") or {}
    enabled = consistency.get("enabled")
    described = manifest.get("characters")
    descriptions = {str(k): str(v) for k, v in described.items()} if isinstance(described, dict) else {}
    return StoryRun(
        folder=folder,
        name=str(story.get("name") or folder.name),
        model=str((manifest.get("model") or {}).get("name") or "unknown"),
        csa=enabled if isinstance(enabled, bool) else None,
        panels=tuple(sorted(panels, key=lambda p: p.index)),
        descriptions=descriptions,
    )


def identity_pairs(story: StoryRun) -> list[tuple[int, int]]:
    """Positions (i, j), i < j, of panel pairs that show at least one character in common."""
    pairs = []
    for i, a in enumerate(story.panels):
        for j in range(i + 1, len(story.panels)):
            if set(a.characters) & set(story.panels[j].characters):
                pairs.append((i, j))
    return pairs
