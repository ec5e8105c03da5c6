"""`render_comic`: a story file in, panels, pages and a manifest out. The Python API of `storyd comic`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from storyd.bank import CharacterBank
from storyd.errors import InputError
from storyd.generator import DrawnPanel, PanelGenerator
from storyd.models import load_pipeline, model_revision, pick_device, pick_dtype, scheduler_name, storyd_home
from storyd.output import OutputFolder, input_hashes
from storyd.plan import RenderPlan, plan_story
from storyd.progress import NullProgress, Progress
from storyd.story import ConsistencySettings, Story
from storyd.story_loader import load_story
from storyd.tokenizer import load_clip_tokenizer


@dataclass(frozen=True)
class ComicOptions:
    out_dir: Path | None = None  # default: out/<story name>/
    model: str | None = None  # default: the story's, else the embedded model
    device: str = "auto"
    force: bool = False  # regenerate every panel and write into a non-storyd folder
    consistency: ConsistencySettings | None = None  # default: the story's
    save_characters: Path | None = None
    load_characters: Path | None = None
    weights_dir: Path | None = None


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


def plan_warnings(plan: RenderPlan) -> list[str]:
    notes = []
    for job in plan.jobs:
        if job.prompt.lost:
            notes.append(
                f"panel {job.index + 1}: the prompt is longer than the text encoder reads; "
                f'these words are lost: "{job.prompt.lost}"'
            )
    if not plan.preset.art:
        notes.append(f"model '{plan.preset.name}' has random weights: its images are noise, not art")
    return notes


def render_comic(
    story: Story | Path | str, options: ComicOptions = ComicOptions(), progress: Progress | None = None
) -> ComicResult:
    started = time.perf_counter()
    progress = progress or NullProgress()
    if not isinstance(story, Story):
        story = load_story(story)
    device = pick_device(options.device)
    bank = CharacterBank()
    loaded = _load_banks(options.load_characters, bank) if options.load_characters else ()
    plan = plan_story(
        story,
        model=options.model,
        consistency=options.consistency,
        loaded_banks=loaded,
        tokenizer=load_clip_tokenizer(storyd_home()),
        device=device,
    )
    out_dir = options.out_dir or Path("out") / story.name
    folder = OutputFolder(out_dir, plan, force=options.force)
    result = ComicResult(out_dir, plan.preset.name, plan.preset.art, warnings=plan_warnings(plan))
    scheduler = scheduler_name(plan.preset)
    revision = model_revision(plan.preset)
    hashes = input_hashes(plan, revision, scheduler)
    validity = _bank_validity(plan, revision, scheduler)
    for name in loaded:
        bank.require_valid(name, validity, options.load_characters / f"{name}.safetensors")
    done = set() if options.force else folder.done_panels(hashes)
    todo = {j.index for j in plan.jobs} - done
    wanted = todo | ({i for refs in plan.references.values() for i in refs} if options.save_characters else set())
    result.skipped = sorted(done)

    def save(drawn: list[DrawnPanel]) -> None:
        for panel in drawn:
            folder.save_panel(panel.job, panel.image, input_hash=hashes[panel.job.index], seconds=panel.seconds)
            result.rendered.append(panel.job.index)
        folder.write_manifest(model=_model_record(plan, revision), settings=_settings_record(plan, device, scheduler))

    if wanted:  # with nothing to draw (a caption or layout edit) no model is loaded
        pipe = load_pipeline(plan.preset, device=device, dtype=pick_dtype(device), weights_dir=options.weights_dir)
        generator = PanelGenerator(pipe, plan, device=device, bank=bank)
        progress.start(len(todo))
        try:
            generator.render(plan.batches(wanted), keep=todo, on_batch=save, progress=progress)
        finally:
            progress.finish()
    for name in plan.references:
        bank.meta[name] = dict(validity)
    if options.save_characters:
        for name in plan.references:
            path = options.save_characters / f"{name}.safetensors"
            bank.save(name, path)
            result.saved_banks.append(path)
    folder.write_manifest(model=_model_record(plan, revision), settings=_settings_record(plan, device, scheduler))
    result.pages = write_comic_pages(plan.story, out_dir, force=True)
    folder.write_manifest(pages=[str(p.relative_to(out_dir)) for p in result.pages])
    result.seconds = time.perf_counter() - started
    return result


def write_comic_pages(story: Story, out_dir: Path, *, force: bool) -> list[Path]:
    """Lay the panels in `out_dir/panels` out as pages (PNG per page and a PDF)."""
    from PIL import Image

    from storyd.layout import render_pages, write_pages
    from storyd.output import panel_file

    images = []
    for panel in story.panels:
        with Image.open(out_dir / panel_file(panel.index)) as image:
            images.append(image.convert("RGB"))
    return write_pages(render_pages(story, images), out_dir, settings=story.layout, force=force, title=story.title)


def _bank_validity(plan: RenderPlan, revision: str | None, scheduler: str) -> dict:
    return {
        "model": plan.preset.name,
        "revision": revision,
        "width": plan.width,
        "height": plan.height,
        "steps": plan.steps,
        "scheduler": scheduler,
        "cfg": plan.guidance > 1,
        "layers": plan.consistency.layers,
    }


def _load_banks(folder: Path, bank: CharacterBank) -> tuple[str, ...]:
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise InputError(f"no saved character banks in {folder}", "make them with --save-characters DIR")
    return tuple(bank.load(path) for path in files)


def _model_record(plan: RenderPlan, revision: str | None) -> dict:
    return {"name": plan.preset.name, "family": plan.preset.family, "revision": revision, "art": plan.preset.art}


def _settings_record(plan: RenderPlan, device: str, scheduler: str) -> dict:
    from dataclasses import asdict

    return {
        "width": plan.width,
        "height": plan.height,
        "steps": plan.steps,
        "guidance": plan.guidance,
        "scheduler": scheduler,
        "device": device,
        "seed": plan.story.seed,
        "consistency": asdict(plan.consistency),
    }
