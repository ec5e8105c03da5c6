"""The output folder: panel files, the manifest, and what makes a run resumable.

Layout of `out/<story>/`: `panels/001.png ...`, `pages/page-001.png ...`, `comic.pdf`,
`manifest.json`, `characters/<name>.safetensors` (saved banks), `panels/history/`
(earlier versions of regenerated panels), `panels/control/` (pose and depth maps detected
in control photos). Every write is atomic; the manifest is
rewritten after every batch, so an interrupted run loses no finished panel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from storyd import __version__
from storyd.errors import InputError
from storyd.fsutil import atomic_save_image, atomic_write_text, file_sha256
from storyd.plan.render_plan import PLAIN, PanelJob, RenderPlan
from storyd.render.conditioning import hash_inputs as conditioning_inputs
from storyd.render.distributed import Shard
from storyd.story.model import Story

MANIFEST = "manifest.json"
GENERATION_VERSION = 1  # bump when a change to storyd changes the pixels of unchanged inputs


def panel_file(index: int) -> str:
    return f"panels/{index + 1:03d}.png"


def control_map_file(index: int, kind: str) -> str:
    return f"panels/control/{index + 1:03d}-{kind}.png"


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def input_hashes(plan: RenderPlan, model_revision: str | None) -> dict[int, str]:
    """A hash of everything that decides each panel's pixels, bank inputs included."""
    common = {
        "model": plan.preset.name,
        "revision": model_revision,
        "width": plan.width,
        "height": plan.height,
        "steps": plan.steps,
        "guidance": plan.guidance,
        "scheduler": plan.scheduler,
        "version": GENERATION_VERSION,
        "story_seed": plan.story.seed,
    }
    consistency = asdict(plan.consistency) if plan.consistency.enabled else None

    def own(job: PanelJob) -> dict:
        mine = {"prompt": job.prompt.prompt, "negative": job.prompt.negative, "seed": job.seed, "role": job.role}
        mine.update(conditioning_inputs(plan, job))  # reference and control images' sha256, scales (none: no key)
        return {**mine, "loras": [list(pair) for pair in job.loras]} if job.loras else mine  # sha256 and weight

    jobs = {j.index: j for j in plan.jobs}
    groups = {
        name: _digest([own(jobs[i]) for i in refs] + [common, consistency]) for name, refs in plan.references.items()
    }
    for name in plan.loaded_banks:
        groups[name] = f"loaded:{name}"
    hashes = {}
    for job in plan.jobs:
        banks = [] if job.role == PLAIN else [groups.get(c) for c in job.prompt.characters]
        hashes[job.index] = _digest([own(job), common, consistency if job.role != PLAIN else None, banks])
    return hashes


def read_seed_overrides(root: Path) -> dict[int, int]:
    """Panel seeds set by `--redo` in an earlier run, kept in the manifest so they stick."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {int(i): int(seed) for i, seed in manifest.get("seed_overrides", {}).items()}


def apply_seed_overrides(story: Story, overrides: dict[int, int]) -> Story:
    panels = tuple(dataclasses.replace(p, seed=overrides[p.index]) if p.index in overrides else p for p in story.panels)
    return dataclasses.replace(story, panels=panels)


class OutputFolder:
    """One comic's output folder and its manifest (or, for a shard, its shard manifest)."""

    def __init__(self, root: Path, plan: RenderPlan, *, force: bool, shard: Shard | None = None) -> None:
        self.root = root
        self.plan = plan
        self.shard = shard
        self.path = root / (shard.manifest_name if shard else MANIFEST)
        self._inherited: list[dict] = []  # a shard's view of panels the main manifest already has
        self._merged: list[Path] = []  # shard manifests folded into the main one, removed once it is written
        main = self._open_main(force)
        if shard is None:
            self.manifest = main
            self._fold(self.shard_manifests())
        else:
            own = self._read(self.path) if self.path.exists() and not force else None
            self.manifest = own or self._fresh(main)
            self._inherited = [] if force else main.get("panels", [])

    def _read(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise InputError(
                "the manifest is not valid JSON", "delete it, or pass --force to start over", path=path
            ) from None

    def _open_main(self, force: bool) -> dict:
        path = self.root / MANIFEST
        story_path = str(self.plan.story.path.resolve())
        if path.exists():
            manifest = self._read(path)
            if manifest.get("story", {}).get("path") != story_path and not force:
                raise InputError(
                    f"{self.root} holds the output of another story ({manifest.get('story', {}).get('path')})",
                    "choose another folder with -o, or pass --force to replace it",
                )
            return manifest if not force else self._fresh(manifest)
        if self.root.exists() and any(self.root.iterdir()) and not force and not self.shard_manifests():
            raise InputError(
                f"{self.root} already exists and is not a storyd output folder",
                "choose another folder with -o, or pass --force to write into it",
            )
        return self._fresh({})

    def _fresh(self, old: dict) -> dict:
        return {"created": old.get("created", _now()), "panels": []}

    def shard_manifests(self) -> list[Path]:
        return sorted(self.root.glob("manifest.shard-*-of-*.json")) if self.root.exists() else []

    def _fold(self, paths: list[Path]) -> None:
        """Take the panels the shards drew into this (the main) manifest; theirs are newer."""
        panels = {p["index"]: p for p in self.manifest.get("panels", [])}
        for path in paths:
            for entry in self._read(path).get("panels", []):
                panels[entry["index"]] = entry
        self.manifest["panels"] = [panels[i] for i in sorted(panels)]
        self._merged = paths

    def known_panels(self) -> dict[int, dict]:
        entries = {p["index"]: p for p in self._inherited}
        entries.update({p["index"]: p for p in self.manifest.get("panels", [])})
        return entries

    def done_panels(self, hashes: dict[int, str]) -> set[int]:
        """Panels whose file is there and whose inputs are unchanged since it was drawn."""
        recorded = self.known_panels()
        done = set()
        for index, digest in hashes.items():
            entry = recorded.get(index)
            if entry and entry.get("input_hash") == digest and (self.root / entry["file"]).is_file():
                done.add(index)
        return done

    def save_panel(self, job: PanelJob, image, *, input_hash: str, seconds: float, control_map=None) -> Path:
        """Write a drawn panel and its manifest entry; `control_map`, a detected pose or depth map, goes beside it."""
        path = self.root / panel_file(job.index)
        previous = self.known_panels().get(job.index)
        if path.exists() and previous and previous.get("input_hash") != input_hash:
            history = self.root / "panels" / "history" / f"{job.index + 1:03d}-{previous['input_hash'][:8]}.png"
            history.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), history)
        atomic_save_image(image, path)
        panel = self.plan.story.panels[job.index]
        entry = {
            "index": job.index,
            "file": panel_file(job.index),
            "prompt": job.prompt.prompt,
            "base_prompt": job.prompt.base,
            "negative": job.prompt.negative,
            "characters": list(job.prompt.characters),
            "caption": panel.caption,
            "seed": job.seed,
            "role": job.role,
            "input_hash": input_hash,
            "seconds": round(seconds, 3),
            "sha256": file_sha256(path),
        }
        if control_map is not None:
            entry["control_map"] = control_map_file(job.index, panel.control.kind)
            atomic_save_image(control_map, self.root / entry["control_map"])
        panels = [p for p in self.manifest.get("panels", []) if p["index"] != job.index] + [entry]
        self.manifest["panels"] = sorted(panels, key=lambda p: p["index"])
        return path

    def write_manifest(self, **fields) -> None:
        plan = self.plan
        self.manifest.update(fields)
        self.manifest.update(
            storyd=__version__,
            updated=_now(),
            story={
                "path": str(plan.story.path.resolve()),
                "name": plan.story.name,
                "title": plan.story.title,
                "sha256": file_sha256(plan.story.path),
            },
            references={name: list(refs) for name, refs in plan.references.items()},
        )
        known = {j.index for j in plan.jobs}
        self.manifest["panels"] = [p for p in self.manifest.get("panels", []) if p["index"] in known]
        if self.shard:
            self.manifest["shard"] = self.shard.label
        atomic_write_text(self.path, json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
        for merged in self._merged:
            merged.unlink(missing_ok=True)
        self._merged = []


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
