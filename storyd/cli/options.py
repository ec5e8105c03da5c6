"""The options more than one command takes, each defined once: the same flags and words everywhere.

`out_option` keeps `-o/--out` one definition while each command says what goes there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON result on stdout; everything else goes to stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes; errors and warnings only.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
WeightsDirOpt = Annotated[Path | None, typer.Option(
    "--weights-dir", help="Where weights are pulled to and looked for [default: $STORYD_WEIGHTS_DIR, else HF cache]."
)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, fp32, fp16 or bf16.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help=(
    "Model preset, see `storyd weights list`; where no default is shown, a story's own model, else the embedded one."))]


def out_option(what: str):
    """`-o/--out`, with the command's own words for what goes there."""
    return typer.Option("--out", "-o", help=what)


def seed_option(what: str):
    """`--seed`: the run's base seed in every command, with the command's own words for its default."""
    return typer.Option("--seed", min=0, max=2**32 - 1, help=f"The run's base seed ({what}).")


SeedOpt = Annotated[int, seed_option("the same seed, the same result")]
