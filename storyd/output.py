"""The output folder: panel files, the manifest, and what makes a run resumable.

Layout of `out/<story>/`: `panels/001.png ...`, `pages/page-001.png ...`, `comic.pdf`,
`manifest.json`, `characters/<name>.safetensors` (saved banks), `panels/history/`
(earlier versions of regenerated panels), `panels/control/` (pose and depth maps detected
in control photos). Every write is atomic; the manifest is
rewritten after every batch, so an interrupted run loses no finished panel.

Faults a run survives: the manifest is written before the first panel (a folder killed
early is still storyd's); a file is named in the manifest's `writing` list before it is
written, and recorded with its sha256 after, so storyd knows which files are its own and
never overwrites or deletes any other (nor writes through a symbolic link); a panel whose
file no longer matches its sha256 is kept in `panels/history/` and drawn again; one run at
a time holds a manifest's lock (`.manifest.json.lock`); a killed run's temporaries go.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from storyd import __version__
from storyd.errors import InputError
from storyd.fsutil import (
    SPILL_PREFIX,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    remove_dead_spill_folders,
    remove_stale_temporaries,
    write_error,
)
from storyd.plan.render_plan import PLAIN, PanelJob, RenderPlan
from storyd.plan.seeds import derive_seed, panel_seed
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


def input_hashes(plan: RenderPlan, model_revision: str | None, threads: int | None = None) -> dict[int, str]:
    """A hash of everything that decides each panel's pixels, bank inputs included.

    `threads`: torch's CPU thread count when drawing on the CPU, where it changes the
    floating-point sums and so the pixels; None on a GPU."""
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
    if threads is not None:
        common["cpu_threads"] = threads
    # where the banks rest never changes a pixel: the key keeps its default, so folders drawn before keep their hashes
    consistency = {**asdict(plan.consistency), "bank_device": "auto"} if plan.consistency.enabled else None

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
        return {int(i): int(seed) for i, seed in manifest.get("seed_overrides", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}  # no manifest, or a damaged one: OutputFolder says what is wrong with it


def read_manifest(path: Path, fix: str = "delete it, or pass --force to start over") -> dict:
    """A manifest's contents, checked to be storyd's (a mapping whose panels have an index and a
    file); `fix` says what to do with one that is not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("the manifest is not valid JSON", fix, path=path) from None
    panels = data.get("panels", []) if isinstance(data, dict) else None
    if not isinstance(panels, list) or not all(
        isinstance(p, dict) and isinstance(p.get("index"), int) and isinstance(p.get("file"), str) for p in panels
    ):
        raise InputError("this is not a storyd manifest (a mapping whose panels have an index and a file)",
                         fix, path=path)
    return data


# where storyd writes inside the folder
WRITTEN_FOLDERS = ("panels", "panels/history", "panels/control", "pages", "characters")
PAGE_FILES = ("pages/page-[0-9][0-9][0-9].png", "comic.pdf", "comic.cbz")  # what laying out writes or removes


class OutputFolder:
    """One comic's output folder and its manifest (or, for a shard, its shard manifest).

    Opening it checks the folder, takes the manifest's lock and marks the folder as
    storyd's; `close` releases the lock.
    """

    def __init__(self, root: Path, plan: RenderPlan, *, force: bool, shard: Shard | None = None) -> None:
        self.root = root
        self.plan = plan
        self.shard = shard
        self.path = root / (shard.manifest_name if shard else MANIFEST)
        self._inherited: list[dict] = []  # a shard's view of panels the main manifest already has
        self._merged: list[Path] = []  # shard manifests folded into the main one, removed once it is written
        self._check_root(force)
        self._lock = _lock(root, self.path)
        try:
            self._open(force)
        except BaseException:
            self.close()
            raise

    def _open(self, force: bool) -> None:
        for folder in ("", *WRITTEN_FOLDERS):
            remove_stale_temporaries(self.root / folder)
        remove_dead_spill_folders(self.root)
        main = self._open_main(force)
        if self.shard is None:
            self.manifest = main
            self._fold(self.shard_manifests())
        else:
            own = read_manifest(self.path) if self.path.exists() else None
            self.manifest = own or self._fresh(main)
            self._inherited = [] if force else main.get("panels", [])
        self._owned = self._owned_files(main)
        if self.shard is None:
            self.check_ours([p.relative_to(self.root).as_posix() for p in self._page_files()])
        if not self.path.exists():
            self.write_manifest()  # marks the folder as storyd's before anything else is written

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_root(self, force: bool) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise InputError(f"{root} is a file, not a folder", "give -o the path of a folder (new or storyd's)")
        for folder in WRITTEN_FOLDERS:
            if (root / folder).is_symlink():
                raise InputError(
                    f"{root / folder} is a symbolic link; storyd writes only inside its output folder",
                    "replace the link with a real folder, or choose another folder with -o",
                )
        if (
            root.is_dir()
            and not (root / MANIFEST).exists()
            and not self.shard_manifests()
            and not force
            # storyd's lock and temporaries, and a disk bank's spill folder
            and any(not p.name.startswith((".manifest.", SPILL_PREFIX)) for p in root.iterdir())
        ):
            raise InputError(
                f"{root} already exists and is not a storyd output folder",
                "choose another folder with -o, or pass --force to write into it (storyd's files only)",
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(root, exc) or InputError(f"cannot make {root}: {exc.strerror}") from None
        for folder in ("", *WRITTEN_FOLDERS):
            if (root / folder).is_dir() and not os.access(root / folder, os.W_OK):
                raise InputError(f"cannot write in {root / folder}: permission denied",
                                 "make it writable, or choose another folder with -o")

    def _open_main(self, force: bool) -> dict:
        path = self.root / MANIFEST
        story_path = str(self.plan.story.path.resolve())
        if not path.exists():
            return self._fresh({})
        manifest = read_manifest(path)
        if manifest.get("story", {}).get("path") != story_path and not force:
            raise InputError(
                f"{self.root} holds the output of another story ({manifest.get('story', {}).get('path')})",
                "choose another folder with -o, or pass --force to replace it",
            )
        return manifest  # with --force too: its records say which files are storyd's

    def _fresh(self, old: dict) -> dict:
        return {"created": old.get("created", _now()), "panels": []}

    def shard_manifests(self) -> list[Path]:
        return sorted(self.root.glob("manifest.shard-*-of-*.json")) if self.root.is_dir() else []

    def _fold(self, paths: list[Path]) -> None:
        """Take the panels the shards drew into this (the main) manifest; theirs are newer."""
        panels = {p["index"]: p for p in self.manifest.get("panels", [])}
        for path in paths:
            for entry in read_manifest(path).get("panels", []):
                panels[entry["index"]] = entry
        self.manifest["panels"] = [panels[i] for i in sorted(panels)]
        self._merged = paths

    def _owned_files(self, main: dict) -> dict[str, set[str | None]]:
        """Every file storyd recorded writing here, with the sha256 values it had (None: any content)."""
        owned: dict[str, set[str | None]] = {}
        manifests = [main, self.manifest] + [read_manifest(p) for p in self.shard_manifests()]
        for manifest in manifests:
            for entry in manifest.get("panels", []):
                owned.setdefault(entry["file"], set()).add(entry.get("sha256"))
            for file in [*manifest.get("writing", []), *manifest.get("pages", [])]:
                owned.setdefault(file, set()).add(None)  # pages: `storyd layout` may lay them out again
        return owned

    def _page_files(self) -> list[Path]:
        return sorted(p for pattern in PAGE_FILES for p in self.root.glob(pattern))

    def _changed(self, file: str) -> str | None:
        """The file's sha256 if it is not what storyd recorded writing there, else None."""
        owned = self._owned.get(file, set())
        current = file_sha256(self.root / file)
        return None if None in owned or current in owned else current

    def check_ours(self, files: list[str]) -> None:
        """Stop, before anything is drawn, if a file storyd would replace or remove is not one it wrote.

        A panel storyd wrote that changed since is no reason to stop: it is kept in history."""
        for file in files:
            path = self.root / file
            if path.is_symlink() or (path.exists() and file not in self._owned):
                raise InputError(
                    f"{path} was not written by storyd (its manifest does not list it), and this run would replace it",
                    "move it out of the folder (or choose another folder with -o), then run again",
                )

    def check_panels(self, indices: set[int]) -> None:
        self.check_ours([panel_file(i) for i in sorted(indices)])

    def known_panels(self) -> dict[int, dict]:
        entries = {p["index"]: p for p in self._inherited}
        entries.update({p["index"]: p for p in self.manifest.get("panels", [])})
        return entries

    def done_panels(self, hashes: dict[int, str]) -> set[int]:
        """Panels whose file is the one storyd drew (by sha256) and whose inputs are unchanged since."""
        recorded = self.known_panels()
        done = set()
        for index, digest in hashes.items():
            entry = recorded.get(index)
            if not entry or entry.get("input_hash") != digest or not (self.root / entry["file"]).is_file():
                continue
            if entry.get("sha256") in (None, file_sha256(self.root / entry["file"])):
                done.add(index)
        return done

    def _write_intent(self, files: list[str]) -> None:
        """Name files in the manifest before writing them: killed mid-way, the next run knows them as storyd's."""
        writing = self.manifest.setdefault("writing", [])
        new = [f for f in files if f not in writing]
        if new:
            writing += new
            for file in new:
                self._owned.setdefault(file, set()).add(None)
            self._dump()

    def save_panel(self, job: PanelJob, image, *, input_hash: str, seconds: float, control_map=None) -> Path:
        """Write a drawn panel and its manifest entry; `control_map`, a detected pose or depth map, goes beside it."""
        file = panel_file(job.index)
        path = self.root / file
        previous = self.known_panels().get(job.index)
        data = _png_bytes(image)
        if path.exists() or path.is_symlink():
            self.check_ours([file])
            changed = self._changed(file)
            tag = f"changed-{changed[:8]}" if changed else None  # kept, then drawn again
            if not changed and previous and previous.get("input_hash") != input_hash:
                tag = previous["input_hash"][:8]
            if tag:
                history = self.root / "panels" / "history" / f"{job.index + 1:03d}-{tag}.png"
                history.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), history)
        sha = self._write_owned(file, data)
        panel = self.plan.story.panels[job.index]
        entry = {
            "index": job.index,
            "file": file,
            "prompt": job.prompt.prompt,
            "base_prompt": job.prompt.base,
            "negative": job.prompt.negative,
            "characters": list(job.prompt.characters),
            "caption": panel.caption,
            "seed": job.seed,
            "role": job.role,
            "input_hash": input_hash,
            "seconds": round(seconds, 3),
            "sha256": sha,
        }
        if control_map is not None:
            entry["control_map"] = self._save_control_map(control_map, control_map_file(job.index, panel.control.kind))
        panels = [p for p in self.manifest.get("panels", []) if p["index"] != job.index] + [entry]
        self.manifest["panels"] = sorted(panels, key=lambda p: p["index"])
        return path

    def _save_control_map(self, image, file: str) -> str:
        """A detected pose or depth map, written as storyd's own file (never over one storyd did not write)."""
        path = self.root / file
        if path.exists() or path.is_symlink():
            self.check_ours([file])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_owned(file, _png_bytes(image))
        return file

    def _write_owned(self, file: str, data: bytes) -> str:
        """Write `data` as storyd's own `file`: named in the manifest before, its sha256 (returned)
        recorded after, so a later run knows the file as storyd's whether or not the write finished."""
        self._write_intent([file])
        atomic_write_bytes(self.root / file, data)
        sha = hashlib.sha256(data).hexdigest()
        self._owned[file] = {sha}
        return sha

    def begin_pages(self, paths: list[Path]) -> None:
        """Name the page files in the manifest before laying out (see `_write_intent`)."""
        self._write_intent([path.relative_to(self.root).as_posix() for path in paths])

    def record_pages(self, paths: list[Path]) -> None:
        """Record the laid-out files (so a later run knows them as storyd's) and save."""
        self.write_manifest(pages=[p.relative_to(self.root).as_posix() for p in paths])

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
            characters={name: c.description for name, c in plan.story.characters.items()},  # eval's segmenter
        )
        known = {j.index for j in plan.jobs}
        captions = {p.index: p.caption for p in plan.story.panels}
        self.manifest["panels"] = [{**p, "caption": captions[p["index"]]} for p in self.manifest.get("panels", [])
                                   if p["index"] in known]
        recorded = {p["file"] for p in self.manifest["panels"]} | set(self.manifest.get("pages", []))
        self.manifest["writing"] = [f for f in self.manifest.get("writing", []) if f not in recorded]
        if not self.manifest["writing"]:
            del self.manifest["writing"]
        if self.shard:
            self.manifest["shard"] = self.shard.label
        self._dump()
        for merged in self._merged:
            merged.unlink(missing_ok=True)
        self._merged = []

    def _dump(self) -> None:
        atomic_write_text(self.path, json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")


def _png_bytes(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _lock(root: Path, manifest: Path) -> int:
    """Hold `.<manifest>.lock` (with this process's id in it) for the run; a second run stops at once."""
    path = root / f".{manifest.name}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path} is a symbolic link", "delete the link, then run again") from None
        raise write_error(path, exc) or InputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise InputError(
            f"another storyd run (process {holder}) is writing {manifest}",
            "wait for it to finish, or choose another folder with -o",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def output_dir(story: Story, out_dir: Path | None = None) -> Path:
    """Where a run of `story` writes: `out_dir`, by default `out/<story name>/`."""
    return out_dir or Path("out") / story.name


def run_seeds(
    story: Story,
    out_dir: Path,
    *,
    seed: int | None = None,
    force: bool = False,
    redo: int | None = None,
    redo_seed: int | None = None,
) -> dict[int, int]:
    """The panel seeds (0-based panel -> seed) a run into `out_dir` sets over the story's: those an
    earlier `--redo` kept in its manifest (none with `force`), then this run's `redo` (its seed
    `redo_seed`, else one derived from the panel's current seed under the base seed `seed`).
    `storyd comic` draws with them and `storyd validate` prints them."""
    overrides = {} if force else read_seed_overrides(out_dir)
    if redo is None:
        return overrides
    index = redo - 1
    if not 0 <= index < len(story.panels):
        raise InputError(f"--redo {redo}: the story has panels 1 to {len(story.panels)}", "name one of them")
    if redo_seed is None:
        panel, base = story.panels[index], story.seed if seed is None else seed
        current = overrides.get(index, panel.seed if panel.seed is not None else panel_seed(base, index))
        redo_seed = derive_seed("redo", current) % 2**32
    return {**overrides, index: redo_seed}


def layout_into(root: Path, files: list[Path], write: Callable[[], list[Path]]) -> list[Path]:
    """Run `write`, which writes the page `files` (and removes stale pages), into `root`: for
    `storyd layout`. In a storyd output folder it holds the manifest's lock, refuses page files the
    manifest does not list, names the files in the manifest before and records them after, as a comic
    run does, so that the next `storyd comic` in the folder knows them as its own."""
    path = root / MANIFEST
    if not path.is_file():
        return write()
    lock = _lock(root, path)
    try:
        manifest = read_manifest(path, "delete it, or lay out into another folder with -o")
        owned = {*manifest.get("pages", []), *manifest.get("writing", [])}
        existing = (p for pattern in PAGE_FILES for p in root.glob(pattern))
        for file in sorted({p.relative_to(root).as_posix() for p in [*files, *existing] if p.exists()}):
            if file not in owned or (root / file).is_symlink():
                raise InputError(
                    f"{root / file} was not written by storyd (its manifest does not list it), "
                    "and laying out would replace it",
                    "move it out of the folder (or lay out into another folder with -o), then run again",
                )
        names = [p.relative_to(root).as_posix() for p in files]
        manifest["writing"] = list(dict.fromkeys([*manifest.get("writing", []), *names]))
        atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        written = write()
        manifest["pages"] = [p.relative_to(root).as_posix() for p in written]
        manifest["writing"] = [f for f in manifest["writing"] if f not in manifest["pages"]]
        if not manifest["writing"]:
            del manifest["writing"]
        manifest["updated"] = _now()
        atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return written
    finally:
        os.close(lock)
