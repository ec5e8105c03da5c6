"""Train the toy video stage (:mod:`storyd.toy.video_stage`) on the toy world's clips.

The toy UNet, VAE, text encoder and image encoder stay frozen; the motion modules, SparseCtrl
and IP-Adapter Plus learn, in four phases (v-prediction on the toy schedule throughout, the
kid's latent cells weighing ``figure_weight`` times the setting's, as in the toy model's own
training):

1. ``video``: whole 16-frame clips, the keyframes' latents at frames 0 and 15 through SparseCtrl
   and each frame's own image tokens, from the encoder of the true frame.
2. ``stills``: the IP-Adapter alone, on single frames with neither SparseCtrl nor a text prompt,
   so that the image tokens are all the UNet has to go on (IP-Adapter's own training, with many
   looks a step where a clip batch has two). After phase 1 the image prompt was worth little on
   a single frame: the loss 0.354 with it against 0.404 cut; after phase 2, 0.266.
3. ``predicted``: clips again, each frame between conditioned on what the shipped Semantic Motion
   Predictor predicts for it from the ends, as at drawing time, so the stage learns to use the
   tokens it will get rather than the true ones. The checkpoint records the predictor's sha256,
   and a run resumed in this phase or the next with another predictor is refused.
4. ``drawn``: clips on the SMP's tokens, now drawn as the backend draws them: the first and last
   frames clean in the noisy clip (:class:`~storyd.animate.backends.animatediff.KeyframeHold`'s
   default) and out of the loss, and keyframe attention on
   (:mod:`storyd.animate.backends.keyframe_attention`), so the learned parts adapt to the frozen
   UNet's attention reaching the keyframes. At a lower learning rate (``drawn_lr``). A share
   ``drawn_prompted`` of its clips carry their look prompt, as `storyd animate` prompts a
   transition with the character's description; the phases before train on the empty prompt.

Clips, latents and tokens are made once and cached in the run folder (keyed by the image
encoder's weights); step ``n`` of a phase draws from ``(seed, phase, n)``, so a resumed run takes
the steps an unbroken one would. A run may start from a trained stage instead of the
initialisation (``--from``, recorded by its weights' sha256): a fine-tune, for example on a new
image encoder's tokens, with phase 1 cut (``--steps 0``).

``python -m storyd.toy.video_train RUN [--steps N] [--stills-steps N] ... [--from STAGE_FOLDER] [--install]``:
any :class:`VideoSettings` field but ``start_from`` as an option (``--drawn-prompted 1``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from storyd.progress import NullProgress, Progress
from storyd.toy.video_stage import (
    STAGE_FILE,
    StageConfig,
    ToyVideoBackend,
    build_stage_pipeline,
    freeze_all_but_stage,
    is_image_prompt,
    load_stage_into,
    save_stage,
    trainable,
)


@dataclass(frozen=True)
class VideoSettings:
    seed: int = 0
    steps: int = 3000  # phase 1, clips on the true frames' tokens
    stills_steps: int = 2000  # phase 2, the IP-Adapter on single frames
    predicted_steps: int = 2500  # phase 3, clips on the SMP's tokens
    drawn_steps: int = 900  # phase 4, clips on the SMP's tokens as the backend draws them
    drawn_lr: float = 2e-4
    drawn_prompted: float = 1.0  # phase 4's share of clips drawn with their look prompt, as `storyd animate` prompts
    keyframe_attention: float = ToyVideoBackend.keyframe_attention  # phase 4's: the weight the stage draws with
    batch: int = 2  # clips of 16 frames
    stills_batch: int = 32  # frames
    clips: int = 640
    lr: float = 5e-4
    warmup: int = 30
    figure_weight: float = 4.0
    checkpoint_every: int = 25
    start_from: str = ""  # sha256 of the trained stage's weights the run starts from; "": the initialisation


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
               figure_weight: float, keyframes: bool = True, drawn_attention: float | None = None) -> torch.Tensor:
    """The v-prediction loss of one batch of clips (B, C, F, h, w), the kid's cells weighted ``figure_weight``;
    ``text``: the prompt's (1, T, D) for every clip, or (B, T, D), one a clip.
    ``keyframes`` False: without SparseCtrl (the stills phase). ``drawn_attention``: as drawn (phase 4),
    the ends clean and out of the loss, keyframe attention at that weight."""
    from storyd.animate.backends.keyframe_attention import keyframe_attention

    x0 = batch["latents"]
    b, frames = x0.shape[0], x0.shape[2]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=g)
    noisy = scheduler.add_noise(x0, noise, t)
    if drawn_attention is not None:
        noisy[:, :, 0], noisy[:, :, -1] = x0[:, :, 0], x0[:, :, -1]
    target = scheduler.get_velocity(x0, noise, t)
    words = text.expand(b, -1, -1).repeat_interleave(frames, 0)  # a row per frame, as the pipeline repeats it
    residuals = {}
    if keyframes:
        cond, mask = keyframe_condition(x0)
        down, mid = pipe.controlnet(noisy, t, encoder_hidden_states=words, controlnet_cond=cond,
                                    conditioning_mask=mask, return_dict=False)
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
    with keyframe_attention(pipe.unet, frames, drawn_attention or 0.0):
        pred = pipe.unet(noisy, t, encoder_hidden_states=words,
                         added_cond_kwargs={"image_embeds": [batch["tokens"]]}, **residuals).sample
    weight = 1.0 + (figure_weight - 1.0) * batch["masks"].permute(0, 2, 1, 3, 4)  # (B, 1, F, h, w)
    if drawn_attention is not None:  # the held ends are given, not drawn
        weight[:, :, 0], weight[:, :, -1] = 0.0, 0.0
    return ((pred - target) ** 2 * weight).mean() / weight.mean()


def single_frames(data: dict[str, torch.Tensor], count: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """``count`` frames drawn from all the clips, each as a clip of one frame."""
    clips, frames = data["tokens"].shape[:2]
    pick = torch.randperm(clips * frames, generator=g)[:count]
    c, f = pick // frames, pick % frames
    return {"latents": data["latents"][c, :, f].unsqueeze(2), "tokens": data["tokens"][c, f].unsqueeze(1),
            "masks": data["masks"][c, f].unsqueeze(1)}


def training_clips(settings: VideoSettings) -> list:
    """The run's clips, in the order of its cached tensors' rows and of its look prompts'."""
    from storyd.toy.motion_world import make_clips

    return make_clips(settings.clips, settings.seed)


@torch.no_grad()
def look_prompts(settings: VideoSettings, tokenizer, text_encoder, batch: int = 64) -> torch.Tensor:
    """Each clip's look prompt (:func:`~storyd.toy.video_eval.look_prompt`) through the text encoder: (clips, T, D)."""
    from storyd.toy.train import tokenize
    from storyd.toy.video_eval import look_prompt

    prompts = [look_prompt(clip) for clip in training_clips(settings)]
    return torch.cat([text_encoder(tokenize(tokenizer, prompts[i: i + batch]))[0]
                      for i in range(0, len(prompts), batch)])


@torch.no_grad()
def predicted_tokens(tokens: torch.Tensor, predictor, batch: int = 32) -> torch.Tensor:
    """Each clip's (F, N, D) tokens as the SMP predicts them from the first and last frame's."""
    from storyd.animate.motion import predict_embeddings

    frames = tokens.shape[1]
    return torch.cat([predict_embeddings(part[:, 0], part[:, -1], frames, predictor)
                      for part in tokens.split(batch)])


def phases(settings: VideoSettings) -> list[tuple[str, int]]:
    """The phases in order with their step counts (the module doc)."""
    return [("video", settings.steps), ("stills", settings.stills_steps), ("predicted", settings.predicted_steps),
            ("drawn", settings.drawn_steps)]


def phase_at(settings: VideoSettings, step: int) -> tuple[str, int, int]:
    """(phase, step within it, its length) of a run's ``step``-th step, counted from 0 over all phases."""
    for name, length in phases(settings):
        if step < length:
            return name, step, length
        step -= length
    raise ValueError("past the last phase")


def learns_in(phase: str, name: str) -> bool:
    """Whether parameter ``name`` (:func:`~storyd.toy.video_stage.trainable`'s) learns in ``phase``."""
    return phase != "stills" or is_image_prompt(name)


def train_video_stage(out: Path, settings: VideoSettings = VideoSettings(), *, resume: bool = False,
                      start_from: Path | None = None, progress: Progress | None = None) -> dict:
    """Train into ``out`` (``checkpoints/last.pt``, ``loss.jsonl``, the stage in ``out/video``); returns facts.
    ``start_from``: the trained stage folder whose weights' sha256 ``settings.start_from`` names."""
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.toy.image_encoder import load_image_encoder
    from storyd.toy.train import Checkpoints, step_generator, tokenize, training_scheduler
    from storyd.toy.video_stage import load_toy_parts
    from storyd.weights.paths import storyd_home

    progress = progress or NullProgress()
    if start_from is not None and not settings.start_from:
        from storyd.errors import InputError

        raise InputError("a stage to start from was given, and the settings start from the initialisation",
                         "set VideoSettings.start_from to stage_digest(that folder)", path=start_from)
    out = Path(out)
    ckpt = Checkpoints(out)
    state = ckpt.open_run(resume, lambda saved: saved == asdict(settings))
    # checked before minutes of loading and encoding clips, not after
    start_stage = checked_start(start_from, settings.start_from) if state is None and settings.start_from else None
    started = time.monotonic()
    encoder = load_image_encoder()
    tokenizer = load_clip_tokenizer(storyd_home())
    parts = load_toy_parts()
    config = StageConfig()
    pipe = build_stage_pipeline(tokenizer, encoder.embed_dim, config, settings.seed, parts)
    data = cached_clips(out, settings, parts["vae"], encoder, progress)
    with torch.no_grad():
        text = parts["text_encoder"](tokenize(tokenizer, [""]))[0]  # (1, T, D): the empty prompt
    named = freeze_all_but_stage(pipe)
    opt = torch.optim.AdamW(named.values(), lr=settings.lr, weight_decay=0.0)
    start = 0
    if start_stage is not None:
        load_stage_into(pipe, start_stage)
    if state is not None:
        with torch.no_grad():
            for k, p in named.items():
                p.copy_(state["stage"][k])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        progress.note(f"resuming from step {start} ({ckpt.path})")
    total = sum(length for _, length in phases(settings))
    order = tuple(name for name, _ in phases(settings))
    if start < total:
        ckpt.truncate_log(*phase_at(settings, start)[:2], order=order)
    scheduler = training_scheduler()
    pipe.unet.train()
    pipe.controlnet.train()
    loss_value, current, learnt_from = float("nan"), None, {}
    for step in range(start, total):
        phase, n, length = phase_at(settings, step)
        if phase != current:
            current = phase
            for k, p in named.items():
                p.requires_grad_(learns_in(phase, k))
            if phase == "drawn" and settings.drawn_prompted:
                data["looks"] = look_prompts(settings, tokenizer, parts["text_encoder"])
            if phase in ("predicted", "drawn") and "predicted" not in data:
                predictor, digest = shipped_predictor(out, state)
                learnt_from = {"predictor": digest}
                progress.note("predicting every clip's frame tokens with the shipped motion predictor")
                data["predicted"] = predicted_tokens(data["tokens"], predictor)
        g = step_generator(settings.seed, phase, n)
        lr = settings.drawn_lr if phase == "drawn" else settings.lr
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (n + 1) / settings.warmup) * (1 - 0.9 * n / length)
        if phase == "stills":
            batch = single_frames(data, settings.stills_batch, g)
        else:
            index = torch.randperm(len(data["latents"]), generator=g)[: settings.batch]
            batch = {k: data[k][index] for k in ("latents", "masks")}
            batch["tokens"] = data["tokens" if phase == "video" else "predicted"][index]
        words = text
        if phase == "drawn" and settings.drawn_prompted:
            prompted = torch.rand(len(index), generator=g) < settings.drawn_prompted
            words = torch.where(prompted.view(-1, 1, 1), data["looks"][index], text)
        loss = stage_loss(pipe, words, batch, g, scheduler, settings.figure_weight, keyframes=phase != "stills",
                          drawn_attention=settings.keyframe_attention if phase == "drawn" else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(named.values(), 1.0)
        opt.step()
        loss_value = loss.item()
        ckpt.log({"phase": phase, "step": n + 1, "loss": round(loss_value, 6)})
        progress.update(f"video stage: {phase}", n + 1, length, unit="steps", detail=f"loss {loss_value:.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == total:
            ckpt.save({"settings": asdict(settings), "step": step + 1, "optimizer": opt.state_dict(),
                       "stage": {k: p.detach().clone() for k, p in trainable(pipe).items()}, **learnt_from})
            facts = {"settings": asdict(settings), "step": step + 1, "wall_time_s_this_run":
                     round(time.monotonic() - started, 1), **learnt_from}
            rows = ckpt.rows()
            for name, _ in phases(settings):
                losses = [row["loss"] for row in rows if row["phase"] == name]
                if losses:
                    facts[f"{name}_loss_first_50"] = round(sum(losses[:50]) / len(losses[:50]), 5)
                    facts[f"{name}_loss_last_50"] = round(sum(losses[-50:]) / len(losses[-50:]), 5)
            save_stage(out / "video", pipe, config, facts)
    pipe.unet.eval()
    pipe.controlnet.eval()
    return {"step": total, "final_loss": loss_value}


def stage_digest(folder: Path) -> str:
    """The sha256 of a trained stage folder's weights (what ``VideoSettings.start_from`` records)."""
    from storyd.errors import InputError
    from storyd.weights.checks import sha256_file

    if not (Path(folder) / STAGE_FILE).is_file():
        raise InputError(f"holds no trained video stage ({STAGE_FILE})",
                         "pass a stage folder, such as a run's video/ or storyd/assets/toy/video", path=folder)
    return sha256_file(Path(folder) / STAGE_FILE)


def checked_start(folder: Path | None, digest: str) -> Path:
    """``folder``, refused unless its weights are the ones ``digest`` names."""
    from storyd.errors import InputError

    if folder is None:
        raise InputError(f"the run starts from a trained stage ({digest[:12]}), and none was given",
                         "pass the folder it was started from with --from")
    if stage_digest(folder) != digest:
        raise InputError(f"is not the stage this run starts from ({digest[:12]})",
                         "pass that stage's folder, or train into a new folder", path=Path(folder) / STAGE_FILE)
    return Path(folder)


def shipped_predictor(out: Path, state: dict | None) -> tuple:
    """The shipped SMP and its file's sha256, refused when the checkpoint being resumed learnt phase 3 from another."""
    from storyd.animate.motion import load_predictor
    from storyd.errors import InputError
    from storyd.toy.motion_train import shipped_motion_weights
    from storyd.weights.checks import sha256_file

    weights = shipped_motion_weights()
    digest = sha256_file(weights)
    if state is not None and state.get("predictor", digest) != digest:
        raise InputError(f"the checkpoint in {out} learnt from another motion predictor than {weights}",
                         "train into a new folder, or restore that predictor")
    return load_predictor(weights)[0], digest


def cached_clips(out: Path, settings: VideoSettings, vae, encoder, progress: Progress) -> dict[str, torch.Tensor]:
    """The run's clips as :func:`clip_tensors` makes them, cached in ``out/clips.pt`` under the image encoder's
    fingerprint; a cache from another encoder is refused, as a run trained on its tokens would be mixed."""
    from storyd.errors import InputError
    from storyd.toy.motion_train import encoder_fingerprint

    cache, key = out / "clips.pt", {"clips": settings.clips, "seed": settings.seed,
                                    "encoder": encoder_fingerprint(encoder)}
    if cache.exists():
        data = torch.load(cache)
        if data.pop("key", None) != key:
            raise InputError("holds clips encoded by another image encoder (or other clips)",
                             "train into a new folder", path=cache)
        return data
    progress.note(f"rendering and encoding {settings.clips} clips")
    data = clip_tensors(training_clips(settings), vae, encoder)
    torch.save({**data, "key": key}, cache)
    return data


def command_args(args: list[str]) -> tuple[VideoSettings, Path | None]:
    """The command's ``RUN [options]``: :class:`VideoSettings` with its fields set by ``--field-name value``
    options, and the ``--from`` folder (None without); ``--install`` is left to the command. An unknown
    option, a missing value or a value of the wrong type is refused."""
    from storyd.errors import InputError

    options = {"--" + f.name.replace("_", "-"): f for f in fields(VideoSettings) if f.name != "start_from"}
    values, start_from, i = {}, None, 1
    while i < len(args):
        name = args[i]
        if name == "--install":
            i += 1
            continue
        if name != "--from" and name not in options:
            raise InputError(f"unknown option {name}", "use " + ", ".join([*options, "--from", "--install"]))
        if i + 1 >= len(args):
            example = "storyd/assets/toy/video" if name == "--from" else "1"
            raise InputError(f"{name} needs a value", f"give one, as in {name} {example}")
        if name == "--from":
            start_from = Path(args[i + 1])
        else:
            kind = {"int": int, "float": float}[options[name].type]
            try:
                values[options[name].name] = kind(args[i + 1])
            except ValueError:
                raise InputError(f"{name} takes {'a whole number' if kind is int else 'a number'}, "
                                 f"not {args[i + 1]!r}", f"give one, as in {name} 1") from None
        i += 2
    return VideoSettings(**values), start_from


def main() -> None:
    import shutil
    import sys

    from rich.console import Console

    from storyd.cli.progress_view import RichProgress
    from storyd.errors import StorydError
    from storyd.toy.video_stage import VIDEO_DIR

    args = sys.argv[1:]
    if not args or args[0].startswith("--"):
        raise SystemExit("error: no run folder: python -m storyd.toy.video_train RUN [--steps N] ... [--from STAGE]")
    run = Path(args[0])
    try:
        settings, start_from = command_args(args)
        settings = replace(settings, start_from=stage_digest(start_from) if start_from else "")
        resume = (run / "checkpoints" / "last.pt").exists()
        facts = train_video_stage(run, settings, resume=resume, start_from=start_from,
                                  progress=RichProgress(Console(stderr=True)))
    except StorydError as exc:
        raise SystemExit(f"error: {exc.format()}") from None
    print(json.dumps(facts))
    if "--install" in args:
        shutil.copytree(run / "video", VIDEO_DIR, dirs_exist_ok=True)


if __name__ == "__main__":
    main()
