"""`render_comic`: a story file in, panels, pages and a manifest out. The Python API of `storyd comic`."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from storyd.csa.bank import CharacterBank
from storyd.errors import InputError
from storyd.output import OutputFolder, input_hashes, output_dir, run_seeds
from storyd.plan.estimate import weights_bytes
from storyd.plan.loras import character_loras
from storyd.plan.presets import model_revision
from storyd.plan.render_plan import RenderPlan, plan_story
from storyd.preflight import preflight
from storyd.progress import NullProgress, Progress
from storyd.render.conditioning import check_weights
from storyd.render.distributed import Launch, Shard, owned_characters, owned_panels
from storyd.render.generator import DrawnPanel, PanelGenerator
from storyd.render.memory import MemoryPlan, MemorySettings, choose_memory, free_memory
from storyd.render.pipelines import load_pipeline
from storyd.render.tokenizer import PromptTokenizer
from storyd.story.loader import load_story
from storyd.story.model import Story
from storyd.weights.paths import storyd_home


@dataclass(frozen=True)
class ComicOptions:
    out_dir: Path | None = None  # default: out/<story name>/
    model: str | None = None  # default: the story's, else the embedded model
    device: str = "auto"  # storyd.render.device.pick_device's policy; under a launcher, each rank's GPU
    force: bool = False  # regenerate every panel and write into a non-storyd folder
    # CSA settings to change, by name, over the model's and the story's (storyd.plan.settings)
    consistency: Mapping[str, object] = field(default_factory=dict)
    seed: int | None = None  # the run's base seed, in place of the story's `seed:`
    scheduler: str | None = None  # a storyd scheduler name; default: the story's, else the model's
    memory: MemorySettings = field(default_factory=MemorySettings)
    redo: int | None = None  # 1-based: redraw only this panel, with a new seed
    redo_seed: int | None = None  # the new seed for `redo` (default: derived from the old one)
    save_characters: Path | None = None
    load_characters: Path | None = None
    weights_dir: Path | None = None
    full_verify: bool = False  # re-hash every weight file instead of trusting the hash cache
    shard: Shard | None = None  # draw only this shard's panels (default: the launcher's rank, else all)
    merge: bool = False  # draw nothing: fold the shards' manifests together and lay out the pages


@dataclass
class ComicResult:
    out_dir: Path
    model: str
    art: bool
    rendered: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    pages: list[Path] = field(default_factory=list)
    saved_banks: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "model": self.model,
            "art": self.art,
            "rendered": self.rendered,
            "skipped": self.skipped,
            "pages": [str(p) for p in self.pages],
            "saved_banks": [str(p) for p in self.saved_banks],
            "seconds": round(self.seconds, 2),
            "warnings": self.warnings,
            "manifest": str(self.out_dir / "manifest.json"),
        }


def render_comic(
    story: Story | Path | str,
    options: ComicOptions | None = None,
    progress: Progress | None = None,
    pipes: dict | None = None,
) -> ComicResult:
    """Draw a story's panels (those not drawn yet), then its pages and manifest.

    `pipes` is a cache of loaded pipelines shared by several calls (one model load for
    many stories). Under `accelerate launch` or `torchrun` every rank calls this with the
    same arguments and draws its share; rank 0 lays out the pages.
    """
    started = time.perf_counter()
    options = options or ComicOptions()
    progress = progress or NullProgress()
    if not isinstance(story, Story):
        story = load_story(story)
    out_dir = output_dir(story, options.out_dir)
    launch = Launch.from_environment(options.device)
    shard = options.shard or launch.shard
    device = launch.device
    overrides = run_seeds(
        story, out_dir, seed=options.seed, force=options.force, redo=options.redo, redo_seed=options.redo_seed
    )
    bank = CharacterBank()
    loaded = _load_banks(options.load_characters, bank) if options.load_characters else ()
    plan = plan_story(
        story,
        model=options.model,
        consistency=options.consistency,
        seed=options.seed,
        panel_seeds=overrides,
        loaded_banks=loaded,
        tokenizer=PromptTokenizer(storyd_home()),
        device=device,
        scheduler=options.scheduler,
        dtype=options.memory.dtype,
    )
    memory = choose_memory(options.memory, device, weights_bytes(plan.preset, 2), free_memory(device))
    with contextlib.ExitStack() as held:  # the output folders' locks, released however the run ends
        folder = held.enter_context(
            OutputFolder(out_dir, plan, force=options.force, shard=None if options.merge else shard)
        )
        result = ComicResult(out_dir, plan.preset.name, plan.preset.art, warnings=preflight(plan))
        revision = model_revision(plan.preset)
        hashes = input_hashes(plan, revision, threads=_cpu_threads(device))
        validity = functools.partial(_bank_validity, plan, revision)
        for name in loaded:
            bank.require_valid(name, validity(name), options.load_characters / f"{name}.safetensors")
        everything = {j.index for j in plan.jobs}
        if options.redo is not None:
            done = everything - {options.redo - 1}
        else:
            done = set() if options.force else folder.done_panels(hashes)
        if options.merge and everything - done:
            missing = ", ".join(str(i + 1) for i in sorted(everything - done))
            raise InputError(f"panels {missing} are not drawn yet", "run the shards that draw them, or drop --merge")
        todo = pending = set() if options.merge else everything - done
        if shard is not None and not options.merge:
            todo &= owned_panels(plan, shard)
        result.skipped = sorted(done)
        folder.check_panels(todo)  # a file storyd did not write stops the run before the model loads
        records = dict(
            model=_model_record(plan, revision),
            settings=_settings_record(plan, device, memory),
            seed_overrides={str(i): seed for i, seed in sorted(overrides.items())},
            loras=[use.record() for use in plan.loras],
        )

        def save(drawn: list[DrawnPanel]) -> None:
            for panel in drawn:
                folder.save_panel(panel.job, panel.image, input_hash=hashes[panel.job.index],
                                  seconds=panel.seconds, control_map=panel.control_map)
                result.rendered.append(panel.job.index)
            folder.write_manifest(**records)

        def generator() -> PanelGenerator:
            check_weights(plan, options.weights_dir)  # a missing IP-Adapter or ControlNet fails before the model loads
            key = (plan.preset.name, device, memory.options)
            if pipes is None or key not in pipes:
                pipe = load_pipeline(plan.preset, device=device, memory=memory, weights_dir=options.weights_dir,
                                     full_verify=options.full_verify)
                if pipes is None:
                    return PanelGenerator(pipe, plan, device=device, bank=bank, weights_dir=options.weights_dir)
                pipes[key] = pipe
            return PanelGenerator(pipes[key], plan, device=device, bank=bank, weights_dir=options.weights_dir)

        progress.update("panels", 0, len(todo), unit="panels")
        try:
            if launch.world > 1:
                _draw_as_rank(plan, launch, todo, pending, generator, save, progress, out_dir / "characters", validity)
            else:
                wanted = todo | ({i for r in plan.references.values() for i in r} if options.save_characters else set())
                if wanted:  # with nothing to draw (a caption or layout edit) no model is loaded
                    generator().render(plan.batches(wanted), keep=todo, on_batch=save, progress=progress)
        finally:
            progress.end("panels")
        for name in plan.references:
            bank.meta[name] = validity(name)
        if options.save_characters:
            for name in plan.references:
                path = options.save_characters / f"{name}.safetensors"
                bank.save(name, path)
                result.saved_banks.append(path)
        folder.write_manifest(**records)
        launch.barrier()
        if shard is not None and not options.merge:
            if launch.rank != 0 or launch.world == 1:
                result.seconds = time.perf_counter() - started
                return result  # a shard's part is done; the merge lays out the pages
            # rank 0 folds every rank's manifest in
            folder = held.enter_context(OutputFolder(out_dir, plan, force=False))
            folder.write_manifest(**records)
        result.pages = write_comic_pages(plan.story, out_dir, force=True, before_write=folder.begin_pages)
        folder.record_pages(result.pages)
        result.seconds = time.perf_counter() - started
        return result


def _draw_as_rank(
    plan, launch: Launch, todo, pending, generator, save, progress, bank_dir: Path, validity: Callable[[str], dict]
) -> None:
    """Each rank draws the banks of its own characters that any pending panel needs, and saves
    them; after a barrier every rank loads the others' banks and draws its own read panels."""
    needed_anywhere = {c for j in plan.jobs if j.index in pending for c in j.prompt.characters}
    mine = [name for name in owned_characters(plan, launch.shard) if name in needed_anywhere]
    drawn = None
    own_refs = {i for name in mine for i in plan.references[name]}
    if mine:
        drawn = generator()
        writes = [b for b in plan.batches(todo | own_refs) if b.mode == "write" and b.character in mine]
        drawn.render(writes, keep=todo, on_batch=save, progress=progress)
        for name in mine:
            drawn.bank.meta[name] = validity(name)
            drawn.bank.save(name, bank_dir / f"{name}.safetensors")
    launch.barrier()
    reads = todo - own_refs
    if not reads:
        return
    drawn = drawn or generator()
    needed = {c for j in plan.jobs if j.index in reads for c in j.prompt.characters}
    for name in sorted(needed - set(mine)):
        drawn.bank.load(bank_dir / f"{name}.safetensors")
        drawn.bank.require_valid(name, validity(name), bank_dir / f"{name}.safetensors")
    batches = plan.batches(reads, have_banks=frozenset(drawn.bank.characters()))
    drawn.render(batches, keep=reads, on_batch=save, progress=progress)


def find_stories(paths: list[Path]) -> list[Path]:
    """Story files from paths and folders (a folder's .yaml, .yml and .txt files, by name)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in (".yaml", ".yml", ".txt"))
            if not inside:
                raise InputError(f"no stories in {path}", "put .yaml or .txt stories there, or name the files")
            found += inside
        else:
            found.append(path)
    names = [p.stem for p in found]
    twins = sorted({n for n in names if names.count(n) > 1})
    if twins:
        raise InputError(f"two stories are named {twins[0]}, and would share an output folder", "rename one of them")
    return found


def write_comic_pages(
    story: Story, out_dir: Path, *, force: bool, before_write: Callable[[list[Path]], None] | None = None
) -> list[Path]:
    """Lay the panels in `out_dir/panels` out as pages (PNG per page and a PDF).

    `before_write` gets every file about to be written, once the pages are drawn."""
    from PIL import Image

    from storyd.layout import render_pages, write_pages
    from storyd.layout.export import output_paths
    from storyd.output import panel_file

    images = []
    for panel in story.panels:
        with Image.open(out_dir / panel_file(panel.index)) as image:
            images.append(image.convert("RGB"))
    pages = render_pages(story, images)
    if before_write:
        before_write(output_paths(out_dir, len(pages), story.layout))
    return write_pages(pages, out_dir, settings=story.layout, force=force, title=story.title)


def _cpu_threads(device: str) -> int | None:
    """torch's thread count when drawing on the CPU (it changes the pixels), else None."""
    import torch

    return torch.get_num_threads() if device == "cpu" else None


def _bank_validity(plan: RenderPlan, revision: str | None, character: str) -> dict:
    """What a character's bank depends on; a saved bank drawn under anything else is refused."""
    return {
        "model": plan.preset.name,
        "revision": revision,
        "width": plan.width,
        "height": plan.height,
        "steps": plan.steps,
        "scheduler": plan.scheduler,
        "cfg": plan.consistency.guidance_for_references(plan.guidance) > 1,  # whether it holds both halves
        "layers": plan.consistency.layers,
        "read_step": plan.consistency.read_step,
        "loras": [list(pair) for pair in character_loras(plan.loras, character)],
    }


def _load_banks(folder: Path, bank: CharacterBank) -> tuple[str, ...]:
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise InputError(f"no saved character banks in {folder}", "make them with --save-characters DIR")
    return tuple(bank.load(path) for path in files)


def _model_record(plan: RenderPlan, revision: str | None) -> dict:
    return {"name": plan.preset.name, "family": plan.preset.family, "revision": revision, "art": plan.preset.art}


def _settings_record(plan: RenderPlan, device: str, memory: MemoryPlan) -> dict:
    from dataclasses import asdict

    return {
        "width": plan.width,
        "height": plan.height,
        "steps": plan.steps,
        "guidance": plan.guidance,
        "scheduler": plan.scheduler,
        "device": device,
        "memory": memory.as_dict(),
        "seed": plan.story.seed,
        "consistency": asdict(plan.consistency),
    }
