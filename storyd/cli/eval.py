"""`storyd eval`: score comic output folders side by side with the pinned protocol; `storyd eval-suite` draws them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from storyd.cli.common import Output
from storyd.cli.options import DeviceOpt, JsonOpt, ModelOpt, QuietOpt, WeightsDirOpt, out_option

RunsArg = Annotated[list[Path], typer.Argument(metavar="OUT_DIR...",
    help="Output folders of `storyd comic` (one column each), or folders of them (one story each).")]
MetricsOpt = Annotated[str, typer.Option(
    "--metrics", help="auto (all whose model is here; the rest are skipped with the pull command) or a comma list: "
                      "clip-t, clip-i, dino-i, dreamsim, toy-identity, toy-adherence.")]
MaskOpt = Annotated[bool, typer.Option(
    "--mask-background", help="Replace the background with noise before CLIP-I, DINO-I and DreamSim.")]
ProtocolOpt = Annotated[str, typer.Option(
    "--protocol", help="storyd (its own metrics) or consistory (ConsiStory+'s published terms: CLIP-T as CLIPScore on "
                       "ViT-B/32, CLIP-I on ViT-B/16 and DreamSim over all image pairs, background removed).")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV (one line per run and metric) on stdout.")]
LabelOpt = Annotated[list[str] | None, typer.Option(
    "--label", help="Column name for each run, in order (default: the folder name).")]


def eval_command(runs: RunsArg, metrics: MetricsOpt = "auto", mask_background: MaskOpt = False, json_: JsonOpt = False,
                 csv_: CsvOpt = False, label: LabelOpt = None, weights_dir: WeightsDirOpt = None,
                 quiet: QuietOpt = False, protocol_name: ProtocolOpt = "storyd") -> None:
    """Score comics: prompt alignment (CLIP-T) and identity consistency (CLIP-I, DINO-I, DreamSim, toy reader)."""
    from storyd.errors import InputError
    from storyd.eval import evaluate

    if json_ and csv_:
        raise InputError("--json and --csv both given", "choose one output format")
    if label and len(label) != len(runs):
        raise InputError(f"{len(label)} --label values for {len(runs)} folders", "give one --label per folder")
    out = Output(json_mode=json_ or csv_, quiet=quiet)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bars; read at import
    with out.progress() as progress:
        report = evaluate(runs, metrics, mask_background=mask_background, weights_dir=weights_dir, labels=label,
                          progress=progress, protocol_name=protocol_name)
    by_reason: dict[str, list[str]] = {}
    for skip in report.skipped:
        by_reason.setdefault(skip.reason, []).append(skip.metric)
    for reason, names in by_reason.items():
        out.warn(f"skipped {', '.join(names)}: {reason}")
    if csv_:
        out.out.file.write(report.csv_text())
        return
    out.result(report.as_dict(), lambda console: _print_table(console, report))


def _print_table(console, report) -> None:
    from storyd.eval import protocol

    header, rows = report.table()
    mask = "background masked" if report.mask_background else "background kept"
    table = Table(title=f"storyd eval · {report.protocol} protocol v{protocol.PROTOCOL_VERSION} · mean "
                        f"[95% bootstrap CI over stories] · {mask}", title_justify="left")
    for i, name in enumerate(header):
        table.add_column(escape(name), justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    console.print(table)
    for label, method in report.background.items():
        console.print(escape(f"background removed in {label}: {method}"))


def eval_suite(
    stories: Annotated[Path, typer.Argument(help="A folder of stories to draw.")] = Path("stories/eval/toy"),
    out: Annotated[Path, out_option("Root folder: one run per CSA mode, OUT/off and OUT/on.")] = Path("out/eval"),
    model: ModelOpt = "toy",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N stories (by name).")] = None,
    device: DeviceOpt = "auto",
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw a story set with CSA off and on, ready for `storyd eval OUT/off OUT/on`; re-running resumes."""
    from storyd.eval.suite import run_suite

    output = Output(json_mode=json_, quiet=quiet)
    with output.progress() as progress:
        runs = run_suite(stories, out, model, limit=limit, device=device, progress=progress)
    output.result({"runs": [str(r) for r in runs]}, lambda console: console.print(" ".join(str(r) for r in runs)))
