"""The output folder: panel files, the manifest, and what makes a run resumable.

Layout of `out/<story>/`: `panels/001.png ...`, `pages/page-001.png ...`, `comic.pdf`,
`manifest.json`, `characters/<name>.safetensors` (saved banks), `panels/history/`
(earlier versions of regenerated panels). Every write is atomic; the manifest is
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
from storyd.fsutil import atomic_save_image, atomic_write_text
from storyd.plan import PLAIN, PanelJob, RenderPlan
from storyd.story import Story

MANIFEST = "manifest.json"
GENERATION_VERSION = 1  # bump when a change to storyd changes the pixels of unchanged inputs


def panel_file(index: int) -> str:
    return f"panels/{index + 1:03d}.png"


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        return {"prompt": job.prompt.prompt, "negative": job.prompt.negative, "seed": job.seed, "role": job.role}

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
    """One comic's output folder and its manifest."""

    def __init__(self, root: Path, plan: RenderPlan, *, force: bool) -> None:
        self.root = root
        self.plan = plan
        self.manifest = self._open(force)

    def _open(self, force: bool) -> dict:
        path = self.root / MANIFEST
        story_path = str(self.plan.story.path.resolve())
        if path.exists():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise InputError(
                    "the manifest is not valid JSON", "delete it, or pass --force to start over", path=path
                ) from None
            if manifest.get("story", {}).get("path") != story_path and not force:
                raise InputError(
                    f"{self.root} holds the output of another story ({manifest.get('story', {}).get('path')})",
                    "choose another folder with -o, or pass --force to replace it",
                )
            return manifest if not force else self._fresh(manifest)
        if self.root.exists() and any(self.root.iterdir()) and not force:
            raise InputError(
                f"{self.root} already exists and is not a storyd output folder",
                "choose another folder with -o, or pass --force to write into it",
            )
        return self._fresh({})

    def _fresh(self, old: dict) -> dict:
        return {"created": old.get("created", _now()), "panels": []}

    def done_panels(self, hashes: dict[int, str]) -> set[int]:
        """Panels whose file is there and whose inputs are unchanged since it was drawn."""
        recorded = {p["index"]: p for p in self.manifest.get("panels", [])}
        done = set()
        for index, digest in hashes.items():
            entry = recorded.get(index)
            if entry and entry.get("input_hash") == digest and (self.root / entry["file"]).is_file():
                done.add(index)
        return done

    def save_panel(self, job: PanelJob, image, *, input_hash: str, seconds: float) -> Path:
        path = self.root / panel_file(job.index)
        previous = next((p for p in self.manifest.get("panels", []) if p["index"] == job.index), None)
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
        atomic_write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
