"""`storyd comic` and `storyd validate`: render a story, or print its plan."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from storyd.cli.common import Output
from storyd.cli.options import (
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    QuietOpt,
    WeightsDirOpt,
    out_option,
    seed_option,
)
from storyd.errors import InputError, SettingError

StoryArg = Annotated[Path, typer.Argument(help="The story: a .yaml file, or a .txt file in the published format.")]
CsaOpt = Annotated[
    bool | None, typer.Option("--csa/--no-csa", help="Consistent Self-Attention on or off (default: the story's, on).")
]
IdPanelsOpt = Annotated[int | None, typer.Option("--id-panels", help="Reference panels per character.")]
RateOpt = Annotated[
    str | None,
    typer.Option("--sampling-rate", help="CSA sampling rate, one or per level coarsest first: 0.5 or 0.5,0.7."),
]
WarmupOpt = Annotated[
    int | None, typer.Option("--warmup-steps", help="Denoising steps with CSA off at the start.")
]
LayersOpt = Annotated[str | None, typer.Option("--layers", help="CSA layers: up, down, mid, all, or levels:0,1.")]
SkipOpt = Annotated[
    bool | None,
    typer.Option("--random-skip/--no-random-skip", help="Skip CSA at random per layer call (published behaviour)."),
]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Read-mode panels per batch.")]
ReadStepOpt = Annotated[
    str | None,
    typer.Option("--read-step", help="Bank step a read panel attends to: same (published) or last (references' last)."),
]
UncondReadsOpt = Annotated[
    bool | None,
    typer.Option("--uncond-reads/--no-uncond-reads", help="The unconditional guidance half reads the bank too."),
]
RefGuidanceOpt = Annotated[
    float | None,
    typer.Option("--reference-guidance", help="Guidance for reference panels (above 1; default: the model's, "
                 "else the story's)."),
]
BankDeviceOpt = Annotated[
    str | None,
    typer.Option("--bank-device", help="Where character banks rest: auto (device, else host memory, else disk, "
                 "the first that fits), device, host, disk, or a device name."),
]
HostMemoryOpt = Annotated[
    str | None,
    typer.Option("--host-memory", help="Host memory the run may use, e.g. 16GB (default: what is free, less a "
                 "margin); character banks go to disk to keep within it."),
]
SeedOpt = Annotated[
    int | None,
    seed_option("in place of the story's `seed:`, with --redo too; the redrawn panel's own seed is --redo-seed"),
]
OutOpt = Annotated[
    Path | None, out_option("Output folder (default: out/<story name>/; with several stories: OUT/<name>/).")
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler", help="ddim, euler, euler-a, heun, dpm++2m, dpm++2m-karras or unipc (default: the model's)."
    ),
]


def _csa_options(sampling_rate: str | None = None, **given) -> dict:
    """The CSA options given on the command line, by setting name; their bounds are checked
    where the settings are resolved (`storyd.plan.settings`), and reported by `_as_options`."""
    if sampling_rate is not None:
        try:
            given["sampling_rate"] = tuple(float(v) for v in sampling_rate.split(","))
        except ValueError:
            raise InputError(
                f"--sampling-rate '{sampling_rate}' is not a number or list of numbers", "e.g. 0.5 or 0.5,0.7"
            ) from None
    return {name: value for name, value in given.items() if value is not None}


@contextlib.contextmanager
def _as_options():
    """A CSA setting out of bounds, named as the option that set it (the story's are named by line)."""
    try:
        yield
    except SettingError as exc:
        raise InputError(exc.message_for("--" + exc.field.replace("_", "-")), exc.hint) from None


def comic(
    stories: Annotated[
        list[Path], typer.Argument(help="Stories (.yaml, or .txt in the published format), or folders of them.")
    ],
    out: OutOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    csa: CsaOpt = None,
    id_panels: IdPanelsOpt = None,
    sampling_rate: RateOpt = None,
    warmup_steps: WarmupOpt = None,
    layers: LayersOpt = None,
    random_skip: SkipOpt = None,
    batch_size: BatchOpt = None,
    read_step: ReadStepOpt = None,
    uncond_reads: UncondReadsOpt = None,
    reference_guidance: RefGuidanceOpt = None,
    bank_device: BankDeviceOpt = None,
    host_memory: HostMemoryOpt = None,
    scheduler: SchedulerOpt = None,
    redo: Annotated[
        int | None, typer.Option("--redo", min=1, help="Redraw only this panel (1-based), with a new seed.")
    ] = None,
    redo_seed: Annotated[
        int | None,
        typer.Option("--redo-seed", min=0, max=2**32 - 1, help="With --redo: the panel's new seed (default: a new "
                     "one derived from its current seed)."),
    ] = None,
    seed: SeedOpt = None,
    dtype: DtypeOpt = "auto",
    offload: Annotated[
        str, typer.Option("--offload", help="auto, none, model or sequential (CPU offload on a GPU).")
    ] = "auto",
    vae_tiling: Annotated[
        bool | None, typer.Option("--vae-tiling/--no-vae-tiling", help="Decode in tiles (default: with offload).")
    ] = None,
    vae_slicing: Annotated[
        bool | None,
        typer.Option("--vae-slicing/--no-vae-slicing", help="Decode one image at a time (default: with offload)."),
    ] = None,
    compile_unet: Annotated[bool, typer.Option("--compile", help="torch.compile the UNet.")] = False,
    save_characters: Annotated[
        Path | None, typer.Option("--save-characters", help="Save each character's bank here (safetensors).")
    ] = None,
    load_characters: Annotated[
        Path | None,
        typer.Option("--load-characters", help="Read saved character banks instead of drawing their reference panels."),
    ] = None,
    weights_dir: WeightsDirOpt = None,
    verify: Annotated[
        str,
        typer.Option("--verify", help="Weight check before drawing: cached (sha256 cache while files are unchanged) "
                     "or full (re-hash every file)."),
    ] = "cached",
    shard: Annotated[
        str | None,
        typer.Option("--shard", help="Draw only shard I of N (I/N), for job arrays; pages come at the merge."),
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Draw nothing: fold finished shards together, lay out pages.")
    ] = False,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Render stories into panels, comic pages and a manifest. Re-running resumes; shards split the work."""
    from storyd.comic import ComicOptions, find_stories, render_comic
    from storyd.plan.footprint import parse_size
    from storyd.render.distributed import parse_shard
    from storyd.render.memory import MemorySettings
    from storyd.render.schedulers import check_scheduler
    from storyd.story.loader import load_story

    output = Output(json_mode=json_, quiet=quiet)
    if redo_seed is not None and redo is None:
        raise InputError("--redo-seed goes with --redo", "redo a panel: --redo N --redo-seed S")
    if verify not in ("cached", "full"):
        raise InputError(f"--verify '{verify}' is not a check", "use cached or full")
    paths = find_stories(stories)
    options = ComicOptions(
        full_verify=verify == "full",
        shard=parse_shard(shard) if shard else None,
        merge=merge,
        scheduler=check_scheduler(scheduler) if scheduler else None,
        memory=MemorySettings(dtype, offload, vae_tiling, vae_slicing, compile_unet),
        redo=redo,
        redo_seed=redo_seed,
        seed=seed,
        consistency=_csa_options(
            enabled=csa, id_panels=id_panels, sampling_rate=sampling_rate, warmup_steps=warmup_steps, layers=layers,
            random_skip=random_skip, batch_size=batch_size, read_step=read_step, uncond_reads=uncond_reads,
            reference_guidance=reference_guidance, bank_device=bank_device,
        ),
        host_memory=parse_size(host_memory) if host_memory else None,
        out_dir=out,
        model=model,
        device=device,
        force=force,
        weights_dir=weights_dir,
        save_characters=save_characters,
        load_characters=load_characters,
    )
    results = []
    with output.progress() as progress, _as_options():
        pipes: dict = {}  # one model load for every story that uses it
        for path in paths:
            story = load_story(path)
            out_dir = out / story.name if out and len(paths) > 1 else out
            results.append(render_comic(story, replace(options, out_dir=out_dir), progress, pipes))
    for result in results:
        for warning in result.warnings:
            output.warn(warning)

    def human(console) -> None:
        for r in results:
            console.print(
                f"Drew {len(r.rendered)} panel(s), kept {len(r.skipped)} unchanged, "
                f"{len(r.pages)} page file(s) in {escape(str(r.out_dir))} ({r.seconds:.1f} s)."
            )
            if not r.art:
                console.print(f"Note: model '{r.model}' draws noise; use a trained model for pictures.")

    summary = results[0].as_dict() if len(results) == 1 else {"stories": [r.as_dict() for r in results]}
    output.result(summary, human)


def validate(
    story: StoryArg,
    out: OutOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    csa: CsaOpt = None,
    id_panels: IdPanelsOpt = None,
    sampling_rate: RateOpt = None,
    warmup_steps: WarmupOpt = None,
    layers: LayersOpt = None,
    read_step: ReadStepOpt = None,
    bank_device: BankDeviceOpt = None,
    host_memory: HostMemoryOpt = None,
    dtype: DtypeOpt = "auto",
    seed: SeedOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check a story and print its plan: prompts, characters, seeds, reference panels, estimates.

    The seeds are those `storyd comic` would draw with into the same output folder (-o), after
    any panel an earlier run redrew with --redo."""
    from storyd.output import output_dir, run_seeds
    from storyd.plan.footprint import Budget, dtype_bytes, host_budget, parse_size
    from storyd.plan.render_plan import plan_story
    from storyd.preflight import preflight
    from storyd.render.device import planned_device
    from storyd.render.tokenizer import PromptTokenizer
    from storyd.story.loader import load_story
    from storyd.weights.paths import storyd_home

    output = Output(json_mode=json_)
    loaded = load_story(story)
    consistency = _csa_options(enabled=csa, id_panels=id_panels, sampling_rate=sampling_rate,
                               warmup_steps=warmup_steps, layers=layers, read_step=read_step, bank_device=bank_device)
    with _as_options():
        plan = plan_story(
            loaded,
            model=model,
            consistency=consistency,
            seed=seed,
            panel_seeds=run_seeds(loaded, output_dir(loaded, out), seed=seed),
            tokenizer=PromptTokenizer(storyd_home()),
            device=planned_device(device),
            budget=Budget(host_budget(parse_size(host_memory) if host_memory else None)),
            dtype_bytes=dtype_bytes(dtype, planned_device(device)),
        )
    warnings = preflight(plan)
    for warning in warnings:
        output.warn(warning)
    output.result(plan_record(plan, warnings), lambda console: _print_plan(console, plan))


def plan_record(plan, warnings: list[str]) -> dict:
    from storyd.render.conditioning import panel_summary

    return {
        "story": str(plan.story.path),
        "title": plan.story.title,
        "model": plan.preset.name,
        "width": plan.width,
        "height": plan.height,
        "steps": plan.steps,
        "guidance": plan.guidance,
        "consistency": plan.consistency.enabled,
        "references": {name: [i + 1 for i in refs] for name, refs in plan.references.items()},
        "loras": [use.record() for use in plan.loras],
        "panels": [
            {
                "panel": j.index + 1,
                "role": j.role,
                "characters": list(j.prompt.characters),
                "seed": j.seed,
                "prompt": j.prompt.prompt,
                "negative": j.prompt.negative,
                "tokens": j.prompt.tokens,  # read in j.prompt.chunks windows of 75: none is lost
                "chunks": j.prompt.chunks,
                **panel_summary(plan, j),  # reference: {character, scale}; control: {kind, image, strength}
            }
            for j in plan.jobs
        ],
        "estimate": plan.estimate.as_dict(),
        "memory": plan.footprint.as_dict(),
        "warnings": warnings,
    }


def _print_plan(console, plan) -> None:
    est = plan.estimate
    console.print(
        f"[bold]{escape(plan.story.title)}[/bold]: {len(plan.jobs)} panels, model {plan.preset.name} "
        f"({plan.width}x{plan.height}, {plan.steps} steps, guidance {plan.guidance})"
    )
    from storyd.render.conditioning import panel_summary

    table = Table("#", "role", "characters", "seed", "prompt")
    for j in plan.jobs:
        prompt = escape(j.prompt.prompt)
        if j.prompt.chunks > 1:
            prompt += f" [cyan]({j.prompt.tokens} tokens, read in {j.prompt.chunks} chunks)[/cyan]"
        steer = panel_summary(plan, j)
        if steer["reference"]:
            ref = steer["reference"]
            prompt += f" [cyan](reference: {escape(ref['character'])} {ref['scale']})[/cyan]"
        if steer["control"]:
            prompt += f" [cyan]({steer['control']['kind']} control {steer['control']['strength']})[/cyan]"
        table.add_row(str(j.index + 1), j.role, escape(", ".join(j.prompt.characters) or "-"), str(j.seed), prompt)
    console.print(table)
    csa = "on" if plan.consistency.enabled else "off"
    console.print(
        f"Consistent Self-Attention: {csa}; reference panels: "
        + (", ".join(f"{escape(n)} {[i + 1 for i in r]}" for n, r in plan.references.items()) or "none")
    )
    console.print(
        f"Estimate (rough): {est.seconds:.0f} s on {est.device}; weights {_size(est.weights_bytes)}, "
        f"character banks {_size(est.bank_bytes)}"
    )
    console.print(_memory_line(plan.footprint, est.device))


def _memory_line(fp, device: str) -> str:
    """Peak host and device memory against their budgets, and where the banks rest."""
    host = f"host peak {_size(fp.host_peak)} of {_size(fp.host_budget)} allowed"
    if fp.device_peak is None:
        where = " (the device is the host)"
    else:
        free = f"{_size(fp.device_budget)} free" if fp.device_budget is not None else "free memory not known here"
        where = f"; {device} peak {_size(fp.device_peak)} ({free})"
    fits = "fits" if fp.fits else "[red]does not fit[/red] (see the warning)"
    return f"Memory (rough): {host}{where}; banks on {fp.bank} ({escape(fp.reason)}): {fits}"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
