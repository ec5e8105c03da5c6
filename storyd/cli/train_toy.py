"""`storyd train-toy`: train the small model of the toy world."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from storyd.cli.common import Output
from storyd.cli.options import DeviceOpt, QuietOpt, SeedOpt, out_option

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "toy"


def train_toy(
    out: Annotated[Path, out_option("Run folder: checkpoints, loss log, exported model.")] = Path("out/train-toy"),
    seed: SeedOpt = 0,
    steps: Annotated[int, typer.Option("--steps", min=1, help="UNet training steps.")] = 3200,
    copy_steps: Annotated[int, typer.Option(
        "--copy-steps", min=0, help="UNet steps of the copy phase that follows (stories naming less).")] = 4000,
    vae_steps: Annotated[int, typer.Option("--vae-steps", min=1, help="VAE training steps (run first).")] = 2000,
    decoder_steps: Annotated[int, typer.Option(
        "--decoder-steps", min=0, help="Steps of the VAE decoder alone, encoder frozen (run last).")] = 3000,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    install: Annotated[bool, typer.Option("--install", help="Copy the trained model into the shipped assets.")] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Train the toy model (VAE, text encoder, UNet, VAE decoder) reproducibly from a seed.

    The shipped model was trained with --device cpu (as `make train-toy` does); other devices
    round differently, so they reproduce it only approximately."""
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.toy.export import install_model
    from storyd.toy.train import TrainSettings, train
    from storyd.weights.paths import storyd_home

    output = Output(quiet=quiet)
    settings = TrainSettings(seed=seed, steps=steps, copy_steps=copy_steps, vae_steps=vae_steps,
                             decoder_steps=decoder_steps)
    tokenizer = load_clip_tokenizer(storyd_home())
    with output.progress() as progress:
        facts = train(out, settings, tokenizer, resume=resume, progress=progress, device=device)
    if install:
        install_model(out / "model", ASSETS)
    output.info(f"trained in {facts['wall_time_s'] / 60:.1f} min, final loss {facts['final_loss']}; "
                f"model in {ASSETS if install else out / 'model'}")
