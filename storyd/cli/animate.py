"""``storyd animate`` and ``storyd train-motion``: option parsing and rendering only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from storyd.cli.common import Output
from storyd.cli.options import DeviceOpt, ForceOpt, JsonOpt, QuietOpt, out_option, seed_option

FramesDirArg = Annotated[
    Path, typer.Argument(help="Folder of PNG/JPEG keyframes (natural name order) or a `storyd comic` output folder.")
]
TransitionFramesOpt = Annotated[int, typer.Option("--frames", help="Frames per transition, both keyframes included.")]


def animate(
    frames_dir: FramesDirArg,
    out: Annotated[
        Path | None, out_option("Output folder. Default: FRAMES_DIR/video for a `storyd comic` folder.")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="auto | wan-flf2v | wan-vace | animatediff | interpolate. auto: the first video model whose weights "
            "are present and that fits the GPU's free memory, in that order, else interpolate (optical-flow warp "
            "with cross-fade; no model, runs anywhere offline); a comic drawn by the toy model gets its own video "
            "stage, toy-video, on the CPU. The choice and its reason are printed."
        ),
    ] = "auto",
    fps: Annotated[float, typer.Option(help="Frames per second of the videos.")] = 12.0,
    frames: TransitionFramesOpt = 16,
    size: Annotated[
        str | None, typer.Option(help="Video size WxH (multiples of 8), or N for the longer side. Default: keyframes'.")
    ] = None,
    gif: Annotated[bool, typer.Option("--gif", help="Also write a GIF beside every MP4.")] = False,
    motion_weights: Annotated[
        Path | None,
        typer.Option(
            help="Trained motion predictor (.safetensors from train-motion); without it, spherical interpolation."
        ),
    ] = None,
    keyframe_attention: Annotated[
        float | None,
        typer.Option(
            help="animatediff: how much every frame's self-attention weighs the two keyframes' tokens against its "
            "own, so the frames between keep their look (0: off). Default: the backend's, 2."
        ),
    ] = None,
    noise_temperature: Annotated[
        float | None,
        typer.Option(
            help="animatediff: scale of the starting noise (lower-temperature sampling below 1). On the toy stage "
            "0.3, its default, kept the kid's look better across the frames between; elsewhere the default is 1."
        ),
    ] = None,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="Print per transition the CLIP-token distances (LPIPS-form, not LPIPS) and CLIPSIM, "
            "to the first frame and between frames.",
        ),
    ] = False,
    seed: Annotated[int, seed_option("the video models' noise")] = 0,
    video_model: Annotated[
        str | None,
        typer.Option(help="A video model by name (e.g. wan2.1-flf2v-14b, wan2.1-vace-1.3b, animatediff-v3); its "
                     "weights come from weights.lock. Sets the backend."),
    ] = None,
    fit: Annotated[
        str, typer.Option(help="letterbox (keep the whole panel) or crop, where the panel's aspect is outside "
                          "what the model was trained on. The MP4 keeps the comic's aspect.")
    ] = "letterbox",
    device: DeviceOpt = "auto",
    offload: Annotated[
        str, typer.Option(help="auto | none | model | group: how the video model is fitted in GPU memory.")
    ] = "auto",
    plan: Annotated[
        bool, typer.Option("--plan", help="Print the backend, size, frames and memory plan, and stop.")
    ] = False,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Turn keyframes into one transition MP4 per consecutive pair, plus story.mp4 joining them all."""
    from storyd.animate import animate as run_animate
    from storyd.animate.frames import parse_size

    output = Output(json_mode=json_, quiet=quiet)
    requested = parse_size(size) if size else None
    if out is None and not plan:
        from storyd.animate.run import default_out_dir

        out = default_out_dir(frames_dir)
    if plan:
        from storyd.animate.run import plan_animation

        info = plan_animation(frames_dir, backend=backend, frames=frames, size=requested, video_model=video_model,
                              fit=fit, device=device, offload=offload, keyframe_attention=keyframe_attention,
                              noise_temperature=noise_temperature)
        output.result(info, lambda console: [console.print(escape(line)) for line in info["lines"]])
        return
    with output.progress() as progress:
        result = run_animate(
            frames_dir,
            out,
            backend=backend,
            fps=fps,
            frames=frames,
            size=requested,
            gif=gif,
            force=force,
            progress=progress,
            motion_weights=motion_weights,
            keyframe_attention=keyframe_attention,
            noise_temperature=noise_temperature,
            metrics=metrics,
            seed=seed,
            video_model=video_model,
            fit=fit,
            device=device,
            offload=offload,
        )

    def human(console) -> None:
        width, height = result.size
        console.print(
            f"{len(result.transitions)} transitions ({result.backend}, {width}x{height}, "
            f"{result.frames_per_transition} frames at {result.fps:g} fps) in {result.seconds:.1f}s"
        )
        for i, path in enumerate(result.transitions):
            line = f"  {path}"
            if result.metrics is not None:
                line += "  " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics[i].items()))
            console.print(line)
        console.print(f"  {result.story} ({result.total_frames} frames)")

    output.result(result.to_dict(), human)


def train_motion(
    out: Annotated[Path, out_option("Folder for checkpoints, the loss log and cached embeddings.")],
    videos_dir: Annotated[Path | None, typer.Argument(
        help="Folder of video clips (MP4/WebM/MOV/GIF) to learn motion from; not with --toy.")] = None,
    toy: Annotated[bool, typer.Option(
        "--toy", help="Learn from the toy world's clips, encoded by the toy image encoder, in the toy's shape "
        "(the defaults marked toy).")] = False,
    steps: Annotated[int | None, typer.Option(
        help="Total optimiser steps (a resumed run continues up to this). [default: 1000; toy 3000]")] = None,
    frames: TransitionFramesOpt = 16,
    batch_size: Annotated[int | None, typer.Option(help="Clips per step. [default: 4; toy 16]")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate. [default: 1e-4; toy 1e-3]")] = None,
    layers: Annotated[int | None, typer.Option(help="Transformer layers. [default: 8 (paper); toy 2]")] = None,
    hidden: Annotated[int | None, typer.Option(help="Transformer width. [default: 1024 (paper); toy 64]")] = None,
    heads: Annotated[int | None, typer.Option(
        help="Attention heads; must divide --hidden (the paper's 12 does not divide 1024). [default: 16; toy 4]")
    ] = None,
    clips: Annotated[int, typer.Option(help="With --toy: clips rendered to learn from.")] = 1200,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 100,
    seed: Annotated[int, seed_option("clip sampling and initial weights")] = 0,
    device: DeviceOpt = "auto",
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the Semantic Motion Predictor: predict the middle frames' image embeddings from the ends.

    Runs in embedding space; real clips are encoded once with the pinned CLIP ViT-H/14,
    toy clips with the toy image encoder (cached in OUT). Re-running with the same OUT
    resumes from the last checkpoint.
    """
    from dataclasses import replace

    from storyd.animate.train_motion import TrainConfig, train_motion_from_videos
    from storyd.errors import InputError
    from storyd.render.device import pick_device

    if toy == (videos_dir is not None):
        raise InputError("train-motion learns from VIDEOS_DIR or from --toy", "pass exactly one of them")
    output = Output(json_mode=json_, quiet=quiet)
    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "num_layers": layers, "hidden_dim": hidden,
             "num_heads": heads}
    if toy:
        from storyd.toy.motion_train import TOY_TRAIN as base
    else:
        base = TrainConfig()
    config = replace(base, **{k: v for k, v in given.items() if v is not None}, frames=frames, save_every=save_every,
                     seed=seed, device=pick_device(device))
    with output.progress() as progress:
        if toy:
            from storyd.toy.motion_train import train_toy_motion

            result = train_toy_motion(out, config, clips=clips, progress=progress)
        else:
            result = train_motion_from_videos(videos_dir, out, config, progress=progress)

    def human(console) -> None:
        console.print(
            f"trained to step {result.step} (loss {result.first_loss:.5f} -> {result.last_loss:.5f}) "
            f"on {result.clips} clips; weights: {result.checkpoint}"
        )

    output.result(result.to_dict(), human)
