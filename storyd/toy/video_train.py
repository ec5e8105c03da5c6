"""Train the toy video stage (:mod:`storyd.toy.video_stage`) on the toy world's clips.

The toy UNet, VAE, text encoder and image encoder stay frozen; the motion modules, SparseCtrl
and IP-Adapter Plus learn together, as AnimateDiff's parts were trained apart on SD1.5. Every
step noises whole 16-frame clips (v-prediction, the toy schedule) and asks the UNet for them with
the keyframes' latents at frames 0 and 15 through SparseCtrl and, as IP-Adapter is trained,
each frame's own image tokens, from the encoder of the true frame (at drawing time the SMP
predicts them). The kid's latent cells weigh ``figure_weight`` times the setting's, as in the
toy model's own training. Clips, latents and tokens are made once and cached in the run folder;
step ``n`` draws from ``(seed, "video", n)``, so a resumed run takes the steps an unbroken one would.

``python -m storyd.toy.video_train RUN [--steps N] [--install]``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from storyd.progress import NullProgress, Progress
from storyd.toy.video_stage import StageConfig, build_stage_pipeline, freeze_all_but_stage, save_stage, trainable


@dataclass(frozen=True)
class VideoSettings:
    seed: int = 0
    steps: int = 3000
    batch: int = 2  # clips of 16 frames
    clips: int = 640
    lr: float = 5e-4
    warmup: int = 30
    figure_weight: float = 4.0
    checkpoint_every: int = 25


@torch.no_grad()
def clip_tensors(clips: list, vae, encoder, batch: int = 8) -> dict[str, torch.Tensor]:
    """Per clip: latents (C, F, h, w) as VAE means, image tokens (F, N, D), kid masks (F, 1, h, w)."""
    from storyd.toy.reader import images_to_tensor

    latents, tokens, masks = [], [], []
    scale = vae.config.scaling_factor
    for i in range(0, len(clips), batch):
        for clip in clips[i: i + batch]:
            frames = clip.frames()
            pixels = images_to_tensor(frames)  # (F, 3, S, S) in [-1, 1]
            latents.append((vae.encode(pixels).latent_dist.mode() * scale).permute(1, 0, 2, 3))
            tokens.append(encoder.encode(frames).float())
            cells = latents[-1].shape[-1]
            kid = torch.stack([torch.from_numpy(np.array(clip.mask(f))) for f in range(len(frames))])
            masks.append(F.adaptive_max_pool2d((kid > 0).float().unsqueeze(1), cells))
    return {"latents": torch.stack(latents), "tokens": torch.stack(tokens), "masks": torch.stack(masks)}


def keyframe_condition(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseCtrl's inputs as the pipeline builds them: the latents at the first and last frame, and the mask."""
    cond = torch.zeros_like(latents)
    mask = torch.zeros_like(latents[:, :1])
    for f in (0, latents.shape[2] - 1):
        cond[:, :, f] = latents[:, :, f]
        mask[:, :, f] = 1
    return cond, mask


def stage_loss(pipe, text: torch.Tensor, batch: dict[str, torch.Tensor], g: torch.Generator, scheduler,
               figure_weight: float) -> torch.Tensor:
    """The v-prediction loss of one batch of clips, the kid's cells weighted ``figure_weight``."""
    x0 = batch["latents"]  # (B, C, F, h, w)
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=g)
    noisy = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t)
    cond, mask = keyframe_condition(x0)
    words = text.expand(b * x0.shape[2], -1, -1)  # one row per frame, as the pipeline repeats the prompt
    down, mid = pipe.controlnet(noisy, t, encoder_hidden_states=words, controlnet_cond=cond, conditioning_mask=mask,
                                return_dict=False)
    pred = pipe.unet(noisy, t, encoder_hidden_states=words, added_cond_kwargs={"image_embeds": [batch["tokens"]]},
                     down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    weight = 1.0 + (figure_weight - 1.0) * batch["masks"].permute(0, 2, 1, 3, 4)  # (B, 1, F, h, w)
    return ((pred - target) ** 2 * weight).mean() / weight.mean()


def train_video_stage(out: Path, settings: VideoSettings = VideoSettings(), *, resume: bool = False,
                      progress: Progress | None = None) -> dict:
    """Train into ``out`` (``checkpoints/last.pt``, ``loss.jsonl``, the stage in ``out/video``); returns facts."""
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.toy.image_encoder import load_image_encoder
    from storyd.toy.motion_world import make_clips
    from storyd.toy.train import Checkpoints, step_generator, tokenize, training_scheduler
    from storyd.toy.video_stage import load_toy_parts
    from storyd.weights.paths import storyd_home

    progress = progress or NullProgress()
    out = Path(out)
    ckpt = Checkpoints(out)
    state = ckpt.open_run(resume, lambda saved: saved == asdict(settings))
    started = time.monotonic()
    encoder = load_image_encoder()
    tokenizer = load_clip_tokenizer(storyd_home())
    parts = load_toy_parts()
    config = StageConfig()
    pipe = build_stage_pipeline(tokenizer, encoder.embed_dim, config, settings.seed, parts)
    cache = out / "clips.pt"
    if cache.exists():
        data = torch.load(cache)
    else:
        progress.note(f"rendering and encoding {settings.clips} clips")
        data = clip_tensors(make_clips(settings.clips, settings.seed), parts["vae"], encoder)
        torch.save(data, cache)
    with torch.no_grad():
        text = parts["text_encoder"](tokenize(tokenizer, [""]))[0]  # (1, T, D): the empty prompt
    named = freeze_all_but_stage(pipe)
    opt = torch.optim.AdamW(named.values(), lr=settings.lr, weight_decay=0.0)
    start = 0
    if state is not None:
        with torch.no_grad():
            for k, p in named.items():
                p.copy_(state["stage"][k])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        progress.note(f"resuming from step {start} ({ckpt.path})")
    ckpt.truncate_log("video", start, order=("video",))
    scheduler = training_scheduler()
    pipe.unet.train()
    pipe.controlnet.train()
    loss_value = float("nan")
    for step in range(start, settings.steps):
        g = step_generator(settings.seed, "video", step)
        index = torch.randperm(len(data["latents"]), generator=g)[: settings.batch]
        for group in opt.param_groups:
            group["lr"] = settings.lr * min(1.0, (step + 1) / settings.warmup) * (1 - 0.9 * step / settings.steps)
        loss = stage_loss(pipe, text, {k: v[index] for k, v in data.items()}, g, scheduler, settings.figure_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(named.values(), 1.0)
        opt.step()
        loss_value = loss.item()
        ckpt.log({"phase": "video", "step": step + 1, "loss": round(loss_value, 6)})
        progress.update("video stage", step + 1, settings.steps, unit="steps", detail=f"loss {loss_value:.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            ckpt.save({"settings": asdict(settings), "step": step + 1, "optimizer": opt.state_dict(),
                       "stage": {k: p.detach().clone() for k, p in trainable(pipe).items()}})
            losses = [row["loss"] for row in ckpt.rows()]
            facts = {"settings": asdict(settings), "step": step + 1,
                     "loss_first_50": round(sum(losses[:50]) / len(losses[:50]), 5),
                     "loss_last_50": round(sum(losses[-50:]) / len(losses[-50:]), 5),
                     "wall_time_s_this_run": round(time.monotonic() - started, 1)}
            save_stage(out / "video", pipe, config, facts)
    pipe.unet.eval()
    pipe.controlnet.eval()
    return {"step": settings.steps, "final_loss": loss_value}


def main() -> None:
    import shutil
    import sys

    from rich.console import Console

    from storyd.cli.progress_view import RichProgress
    from storyd.toy.video_stage import VIDEO_DIR

    args = sys.argv[1:]
    run = Path(args[0])
    steps = int(args[args.index("--steps") + 1]) if "--steps" in args else VideoSettings.steps
    settings = VideoSettings(steps=steps)
    resume = (run / "checkpoints" / "last.pt").exists()
    print(json.dumps(train_video_stage(run, settings, resume=resume, progress=RichProgress(Console(stderr=True)))))
    if "--install" in args:
        shutil.copytree(run / "video", VIDEO_DIR, dirs_exist_ok=True)


if __name__ == "__main__":
    main()
