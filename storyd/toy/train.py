"""Train the toy model, reproducibly from one seed (on the CPU, byte for byte; the shipped model was trained there).

Four phases: the VAE first (short, on 32 px crops: it is fully convolutional, so
crops teach it the same thing for a quarter of the cost); then the text encoder,
taught to read captions back into attributes and frozen (``text_pretrain``), as
Stable Diffusion's CLIP encoder is frozen; then the UNet on latents of pre-rendered
scenes, with ~10% empty captions for classifier-free guidance; last, the VAE's
decoder alone on whole scenes (``train_decoder``).

Most of every UNet batch is stories: a kid's reference panel, nearly finished, and
panels of the same kid elsewhere that read it through storyd's own Consistent
Self-Attention (every self-attention layer, read mode) while the captions leave much
of the look unnamed. That is what CSA's read mode offers at drawing time (``read_step:
last``), and the only way to predict a reading panel's unnamed shirt is to take it
from the reference, so this small model learns what SDXL learnt from web images: that
tokens of another image of the same subject may be copied. The reading panels' loss
reaches the reference pass too, so the reference learns to show what it holds. (Two
earlier versions shared tokens between panels at one noise level, where each panel
knows as little as the others: CSA then did not move identity agreement at all.) The
rest of the batch is single scenes with plain attention, so CSA off stays the
ordinary model. The loss weighs the latent cells a figure covers ``figure_weight``
times more than the setting's, so the kid, not the background, gets most of the
gradient. Every random draw of step ``n`` comes from a
generator seeded with ``(seed, phase, n)``, so a resumed run takes exactly the
steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from storyd.csa.bank import CharacterBank
from storyd.csa.processor import READ, WRITE, ConsistencyState, consistent_attention
from storyd.errors import InputError
from storyd.fsutil import atomic_open
from storyd.progress import NullProgress, Progress
from storyd.render.device import pick_device
from storyd.story.model import ConsistencySettings
from storyd.toy.captions import caption, story_captions
from storyd.toy.export import export_model
from storyd.toy.model_config import (
    ToyModelConfig,
    build_text_encoder,
    build_unet,
    build_vae,
    noise_scheduler_config,
)
from storyd.toy.text_pretrain import pretrain_text_encoder
from storyd.toy.world import figure_mask, random_scene, render, story_scenes


def _report(progress: Progress, phase: str, done: int, total: int, loss: float) -> None:
    progress.update(phase, done, total, unit="steps", detail=f"loss {loss:.4f}")


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    vae_steps: int = 2000
    vae_batch: int = 16
    vae_crop: int = 32
    vae_lr: float = 1e-3
    steps: int = 3200
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 200
    empty_caption_prob: float = 0.1
    figure_weight: float = 4.0  # loss weight of the latent cells a figure touches (the setting's are 1)
    ema_decay: float = 0.999
    scenes: int = 12000  # pre-rendered single training scenes
    stories: int = 3000  # pre-rendered stories (one kid each) ...
    story_panels: int = 5  # ... of this many panels: the first is the reference, the others read it
    stories_per_batch: int = 5  # their reading panels join `batch`; the rest of it is single scenes
    reference_t: int = 120  # a reference panel is noised to a timestep below this: nearly finished
    story_name_prob: float = 0.4  # each look attribute is named in a story's captions with this probability
    shared_rate: tuple[float, float] = (0.5, 1.0)  # CSA sampling rate, drawn uniformly per step
    # A second UNet phase after `steps` that trains copying: stories fill more of each batch and
    # name fewer attributes, so most of what a reading panel must draw is only in its reference.
    copy_steps: int = 4000
    copy_stories_per_batch: int = 6
    copy_name_prob: float = 0.15
    copy_lr: float = 2e-4
    # Last, the VAE decoder alone on whole scenes (the encoder, hence every latent, stays as the UNet learnt it).
    decoder_steps: int = 3000
    decoder_batch: int = 16
    decoder_lr: float = 5e-4
    text_steps: int = 800  # text encoder pretraining, before the UNet phase
    text_batch: int = 128
    text_lr: float = 3e-3
    checkpoint_every: int = 200
    model: ToyModelConfig = field(default_factory=ToyModelConfig)


def training_scheduler():
    """The DDPM scheduler that noises training latents (DDPM has no ``set_alpha_to_one``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**{k: v for k, v in noise_scheduler_config().items() if k != "set_alpha_to_one"})


def step_generator(seed: int, phase: str, step: int) -> torch.Generator:
    salt = {"vae": 1, "unet": 2, "data": 3, "init": 4, "decoder": 5, "image_encoder": 6, "video": 7,
            "stills": 8, "predicted": 9, "drawn": 10}[phase]
    return torch.Generator().manual_seed((seed * 1_000_003 + salt) * 10_000_019 + step)


def build_models(cfg: ToyModelConfig, seed: int):
    """The three untrained parts. diffusers and transformers initialise weights from torch's
    default generator, so it is seeded inside ``fork_rng``, which restores it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_vae(cfg), build_text_encoder(cfg), build_unet(cfg)


def render_dataset(count: int, seed: int, size: int, stories: int = 0,
                   panels: int = 4) -> tuple[list, torch.Tensor, torch.Tensor]:
    """``count`` random scenes, then ``stories`` x ``panels`` story scenes (``panels`` in a row
    show one kid); their renders as a uint8 tensor (N, 3, H, W) and their figure masks (N, 1, H, W)."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    scenes += [scene for _ in range(stories) for scene in story_scenes(rng, panels)]
    pixels = np.stack([np.asarray(render(s, size)) for s in scenes])
    masks = np.stack([np.asarray(figure_mask(s, size)) for s in scenes])[:, None]
    return scenes, torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks)


def figure_weights(masks: torch.Tensor, size: int, weight: float) -> torch.Tensor:
    """Per cell of a ``size`` grid (latent cells, or pixels for the decoder), the loss weight:
    ``weight`` where a figure touches the cell, else 1. A kid covers about a tenth of a scene,
    and its shirt a few latent cells; with a plain loss the setting dominates and a model this
    small learns figure colours last, if at all."""
    touched = F.adaptive_max_pool2d(masks.float(), size) > 0
    return 1.0 + (weight - 1.0) * touched.float()


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


class Checkpoints:
    """The run folder: ``last.pt`` (atomic), the JSONL loss log, and the exported parts."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "checkpoints" / "last.pt"
        self.log_path = out / "loss.jsonl"

    def load(self) -> dict | None:
        return torch.load(self.path, weights_only=False, map_location="cpu") if self.path.exists() else None

    def open_run(self, resume: bool, matches: Callable[[dict], bool]) -> dict | None:
        """The checkpoint to resume (None: a new run), after refusing what would lose or mix work: a
        resume with nothing to resume or whose saved settings `matches` refuses, or a new run over an
        existing one."""
        state = self.load() if resume else None
        if resume and state is None:
            raise InputError(f"nothing to resume in {self.out}", "run without --resume to start a new training run")
        if state is not None and not matches(state["settings"]):
            raise InputError(f"the checkpoint in {self.out} was made with other settings",
                             "resume with the same settings, or train into a new folder")
        if not resume and self.path.exists():
            raise InputError(f"{self.out} already holds a training run",
                             "pass --resume to continue it, or choose another folder")
        self.out.mkdir(parents=True, exist_ok=True)
        return state

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path) as handle:
            torch.save(state, handle)

    def truncate_log(self, phase: str, step: int, order: tuple[str, ...] = ("vae", "unet", "decoder")) -> None:
        """Drop log lines a resumed run will write again: those of ``phase`` after ``step``, and of later
        phases (``order`` lists a run's phases)."""
        if not self.log_path.exists():
            return
        keep = []
        for line in self.log_path.read_text().splitlines():
            row = json.loads(line)
            if order.index(row["phase"]) < order.index(phase) or row["phase"] == phase and row["step"] <= step:
                keep.append(line)
        self.log_path.write_text("".join(k + "\n" for k in keep))

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()] if self.log_path.exists() else []

    def log(self, row: dict) -> None:
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_vae(vae, pixels: torch.Tensor, s: TrainSettings, ckpt: Checkpoints, state: dict | None,
              progress: Progress, elapsed: Callable[[], float]) -> float:
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0)
    start = 0
    if state is not None and state["phase"] == "vae":
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    loss_value = state.get("loss", float("nan")) if state is not None and state["phase"] == "vae" else float("nan")
    device = _device_of(vae)
    vae.train()
    for step in range(start, s.vae_steps):
        g = step_generator(s.seed, "vae", step)
        idx = torch.randint(0, len(pixels), (s.vae_batch,), generator=g)
        top, left = (torch.randint(0, pixels.shape[-1] - s.vae_crop + 1, (2,), generator=g)).tolist()
        x = to_unit(pixels[idx, :, top : top + s.vae_crop, left : left + s.vae_crop]).to(device)
        for group in opt.param_groups:
            group["lr"] = s.vae_lr * _lr_factor(step, s.vae_steps, min(100, max(1, s.vae_steps // 10)))
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        loss_value = loss.item()
        ckpt.log({"phase": "vae", "step": step + 1, "loss": round(loss_value, 6)})
        _report(progress, "vae", step + 1, s.vae_steps, loss_value)
        if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.vae_steps:
            ckpt.save({"phase": "vae", "step": step + 1, "vae": vae.state_dict(), "opt": opt.state_dict(),
                       "settings": asdict(s), "elapsed": elapsed(), "loss": loss_value})
    vae.eval()
    return loss_value


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every render, so the UNet phase needs no VAE; on the CPU, where
    every random draw of training is made."""
    means, stds = [], []
    for i in range(0, len(pixels), batch):
        dist = vae.encode(to_unit(pixels[i : i + batch]).to(_device_of(vae))).latent_dist
        means.append(dist.mean.cpu())
        stds.append(dist.std.cpu())
    return torch.cat(means), torch.cat(stds)


def train_decoder(vae, pixels: torch.Tensor | None, masks: torch.Tensor | None,
                  latents: tuple[torch.Tensor | None, torch.Tensor | None], s: TrainSettings, ckpt: Checkpoints,
                  state: dict | None, progress: Progress, extra_state: Callable[[], dict]) -> float:
    """Fine-tune the decoder alone, on whole scenes decoded from posterior samples.

    The first phase, short and on crops, left small things soft: glasses faded on dark
    skin and some shirt colours drifted, which the reader then misread even in a perfectly
    consistent story. With the encoder frozen every latent stays what the UNet learnt, so
    this phase sharpens what the model draws without retraining the UNet (Stable
    Diffusion's own VAE got the same decoder-only fine-tune). Figure pixels weigh
    ``figure_weight`` times more, as in the UNet phase.
    """
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=s.decoder_lr, weight_decay=0.0)
    start, loss_value = 0, float("nan")
    if state is not None:
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        start, loss_value = state["step"], state["loss"]
    mean, std = latents
    device = _device_of(vae)
    vae.decoder.train()
    for step in range(start, s.decoder_steps):
        g = step_generator(s.seed, "decoder", step)
        idx = torch.randint(0, len(pixels), (s.decoder_batch,), generator=g)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)).to(device)
        for group in opt.param_groups:
            group["lr"] = s.decoder_lr * _lr_factor(step, s.decoder_steps, min(50, max(1, s.decoder_steps // 10)))
        err = vae.decode(z).sample - to_unit(pixels[idx]).to(device)
        weight = figure_weights(masks[idx], s.model.image_size, s.figure_weight).to(device)
        loss = (weight * (err.pow(2) + 0.5 * err.abs())).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_value = loss.item()
        ckpt.log({"phase": "decoder", "step": step + 1, "loss": round(loss_value, 6)})
        _report(progress, "decoder", step + 1, s.decoder_steps, loss_value)
        if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.decoder_steps:
            ckpt.save({"phase": "decoder", "step": step + 1, "vae": vae.state_dict(), "opt": opt.state_dict(),
                       "loss": loss_value, "settings": asdict(s), **extra_state()})
    vae.eval()
    return loss_value


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


class Ema:
    """Exponential moving average of parameters, warmed up so early steps are not frozen in."""

    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for m in modules for p in m.parameters()]

    def update(self, modules: list[torch.nn.Module], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for s, p in zip(self.shadow, (p for m in modules for p in m.parameters())):
                s.lerp_(p.detach(), 1 - d)

    def copy_to(self, modules: list[torch.nn.Module]) -> None:
        with torch.no_grad():
            for s, p in zip(self.shadow, (p for m in modules for p in m.parameters())):
                p.copy_(s)


def train_unet(unet, text_encoder, tokenizer, scenes: list, latents: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
               scaling: float, s: TrainSettings, ckpt: Checkpoints, state: dict | None,
               progress: Progress, extra_state: Callable[[], dict]) -> Ema:
    opt = torch.optim.AdamW(unet.parameters(), lr=s.lr, weight_decay=0.01)
    ema = Ema([unet], s.ema_decay)
    start = 0
    if state is not None and state["phase"] == "unet":
        unet.load_state_dict(state["unet"])
        opt.load_state_dict(state["opt"])
        ema.shadow = [t.to(_device_of(unet)) for t in state["ema"]]
        start = state["step"]
    unet.train()
    text_encoder.eval().requires_grad_(False)
    noise_sched = training_scheduler()
    mean, std, weights = latents  # posterior mean and std, per-cell loss weights
    device = _device_of(unet)
    shared = ConsistencyState(ConsistencySettings(), seed=0)
    total = s.steps + s.copy_steps
    with consistent_attention(unet, shared, "all"):
        for step in range(start, total):
            g = step_generator(s.seed, "unet", step)
            batch = _batch(scenes, step_settings(s, step), g, noise_sched.config.num_train_timesteps)
            idx = torch.cat([batch.ref_idx, batch.idx])
            z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scaling
            noise = torch.randn(z0.shape, generator=g)
            z0, noise, t = z0.to(device), noise.to(device), torch.cat([batch.ref_t, batch.t]).to(device)
            zt = noise_sched.add_noise(z0, noise, t)
            for group in opt.param_groups:
                group["lr"] = unet_lr(s, step)
            with torch.no_grad():
                cond = text_encoder(tokenize(tokenizer, batch.ref_texts + batch.texts).to(device))[0]
            shared.settings = ConsistencySettings(layers="all", sampling_rate=(batch.rate,), warmup_steps=0,
                                                  random_skip=False)
            shared.seed, shared.bank, n_refs = step, GraphBank(), len(batch.ref_idx)
            shared.begin_batch(WRITE, [(f"story{k}",) for k in range(n_refs)], cfg=False)
            ref_pred = unet(zt[:n_refs], t[:n_refs], cond[:n_refs]).sample
            shared.begin_batch(READ, batch.groups, cfg=False)
            pred = torch.cat([ref_pred, unet(zt[n_refs:], t[n_refs:], cond[n_refs:]).sample])
            loss = (weights[idx].to(device) * (pred - noise_sched.get_velocity(z0, noise, t)).pow(2)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            ema.update([unet], step)
            ckpt.log({"phase": "unet", "step": step + 1, "loss": round(loss.item(), 6)})
            _report(progress, "unet", step + 1, total, loss.item())
            if (step + 1) % s.checkpoint_every == 0 or step + 1 == total:
                ckpt.save({"phase": "unet", "step": step + 1, "unet": unet.state_dict(),
                           "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(), "ema": ema.shadow,
                           "scaling": scaling, "settings": asdict(s), **extra_state()})
    unet.eval()
    return ema


def step_settings(s: TrainSettings, step: int) -> TrainSettings:
    """The settings a UNet step draws its batch with: the copy phase's after ``s.steps``."""
    if step < s.steps:
        return s
    return replace(s, stories_per_batch=s.copy_stories_per_batch, story_name_prob=s.copy_name_prob)


def unet_lr(s: TrainSettings, step: int) -> float:
    """Warm-up and cosine decay over the main phase; the copy phase decays again from ``copy_lr``."""
    if step < s.steps:
        return s.lr * _lr_factor(step, s.steps, s.warmup)
    return s.copy_lr * _lr_factor(step - s.steps, s.copy_steps, 0)


class GraphBank(CharacterBank):
    """A character bank that keeps the autograd graph, so the reading panels' loss trains the
    reference pass too (storyd's bank detaches: drawing needs no gradients)."""

    def write(self, character: str, layer: str, step: int, tokens: torch.Tensor) -> None:
        self.entries.setdefault(character, {})[(layer, step)] = tokens


@dataclass(frozen=True)
class _Batch:
    idx: torch.Tensor  # scene indices: single scenes, then the stories' reading panels
    texts: list[str]
    t: torch.Tensor
    groups: list[tuple[str]]  # CSA labels: a story's readers share its label, single scenes each have their own
    ref_idx: torch.Tensor  # each story's reference panel, labelled story0, story1, ...
    ref_texts: list[str]
    ref_t: torch.Tensor
    rate: float


def _batch(scenes: list, s: TrainSettings, g: torch.Generator, timesteps: int) -> _Batch:
    """Single scenes, then whole stories; every draw comes from the step's generator ``g``."""
    text_rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=g)))
    singles = s.batch - s.stories_per_batch * (s.story_panels - 1)
    idx = torch.randint(0, s.scenes, (singles,), generator=g).tolist()
    texts = ["" if text_rng.random() < s.empty_caption_prob else caption(scenes[i], text_rng) for i in idx]
    t = torch.randint(0, timesteps, (singles,), generator=g).tolist()
    groups = [(f"scene{k}",) for k in range(singles)]
    ref_idx, ref_texts = [], []
    for number, story in enumerate(torch.randint(0, s.stories, (s.stories_per_batch,), generator=g).tolist()):
        members = [s.scenes + story * s.story_panels + k for k in range(s.story_panels)]
        if text_rng.random() < s.empty_caption_prob:  # the unconditional half of a CSA batch reads too
            captions = [""] * len(members)
        else:
            captions = story_captions([scenes[i] for i in members], text_rng, name_prob=s.story_name_prob)
        ref_idx.append(members[0])
        ref_texts.append(captions[0])
        idx += members[1:]
        texts += captions[1:]
        groups += [(f"story{number}",)] * (len(members) - 1)
    t += torch.randint(0, timesteps, (len(idx) - singles,), generator=g).tolist()
    ref_t = torch.randint(0, s.reference_t, (len(ref_idx),), generator=g)
    lo, hi = s.shared_rate
    rate = lo + (hi - lo) * float(torch.rand((), generator=g))
    return _Batch(torch.tensor(idx), texts, torch.tensor(t), groups, torch.tensor(ref_idx), ref_texts, ref_t, rate)


def _latents(vae, pixels: torch.Tensor, cache: Path, *, reuse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every render once the VAE is final; a resumed run reads them back (minutes saved)."""
    if reuse and cache.exists():
        saved = torch.load(cache)
        return saved["mean"], saved["std"]
    mean, std = encode_latents(vae, pixels)
    with atomic_open(cache) as handle:
        torch.save({"mean": mean, "std": std}, handle)
    return mean, std


# A resume may lengthen or shorten a phase (the LR schedule follows), or add the copy or decoder phase.
_RESUMABLE_CHANGES = ("steps", "vae_steps", "copy_steps", "copy_stories_per_batch", "copy_name_prob", "copy_lr",
                      "decoder_steps", "decoder_batch", "decoder_lr")


def _settings_match(saved: dict, s: TrainSettings) -> bool:
    ours = json.loads(json.dumps(asdict(s)))
    theirs = json.loads(json.dumps(saved))
    return {k: v for k, v in ours.items() if k not in _RESUMABLE_CHANGES} == {
        k: v for k, v in theirs.items() if k not in _RESUMABLE_CHANGES}


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _render(s: TrainSettings) -> tuple[list, torch.Tensor, torch.Tensor]:
    return render_dataset(s.scenes, s.seed, s.model.image_size, s.stories, s.story_panels)


def train(out: Path, settings: TrainSettings, tokenizer, *, resume: bool = False,
          progress: Progress | None = None, device: str = "auto") -> dict:
    """Run every phase into ``out`` on ``device`` (``pick_device``'s policy) and export the model
    there; return training facts. Every random draw is made on the CPU whatever the device."""
    device = pick_device(device)
    stories = max(settings.stories_per_batch, settings.copy_stories_per_batch if settings.copy_steps else 0)
    if settings.story_panels < 2 or stories * (settings.story_panels - 1) > settings.batch:
        raise InputError(f"{stories} stories of {settings.story_panels} panels (a reference and "
                         f"the panels that read it) do not fit in a batch of {settings.batch}",
                         "use at least 2 panels a story, fewer stories per batch, or a larger batch")

    progress = progress or NullProgress()
    ckpt = Checkpoints(out)
    state = ckpt.open_run(resume, lambda saved: _settings_match(saved, settings))
    phase = state["phase"] if state else "vae"
    ckpt.truncate_log(phase, state["step"] if state else 0)
    t0 = time.monotonic()
    elapsed_before = state.get("elapsed", 0.0) if state else 0.0

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - t0

    vae, text_encoder, unet = (m.to(device) for m in build_models(settings.model, settings.seed))
    scenes, pixels, masks = None, None, None
    if phase == "vae":
        scenes, pixels, masks = _render(settings)
        vae_loss = train_vae(vae, pixels, settings, ckpt, state, progress, elapsed)
    else:
        vae.load_state_dict(state["vae"])
        vae_loss = state["vae_loss"]
    vae.eval()
    unet_steps = settings.steps + settings.copy_steps
    unet_left = phase == "vae" or phase == "unet" and state["step"] < unet_steps
    decoder_left = settings.decoder_steps > (state["step"] if phase == "decoder" else 0)
    mean = std = weights = None
    if unet_left or decoder_left:
        if scenes is None:
            scenes, pixels, masks = _render(settings)
        mean, std = _latents(vae, pixels, out / "checkpoints" / "latents.pt", reuse=phase != "vae")
        weights = figure_weights(masks, settings.model.latent_size, settings.figure_weight)
    scaling = state["scaling"] if phase != "vae" else float(1.0 / mean.std())
    if phase == "vae":
        text_accuracy = pretrain_text_encoder(
            text_encoder, lambda texts: tokenize(tokenizer, texts), scenes[: settings.scenes],
            seed=settings.seed, steps=settings.text_steps, batch=settings.text_batch, lr=settings.text_lr,
            empty_prob=settings.empty_caption_prob,
            progress=progress)
    else:
        text_encoder.load_state_dict(state["text_encoder"])
        text_accuracy = state["text_accuracy"]

    if phase == "decoder":  # the UNet is final: its EMA weights were saved
        unet.load_state_dict(state["unet"])
        unet_done = state["unet_steps"]
    else:
        vae_state = vae.state_dict()
        ema = train_unet(unet, text_encoder, tokenizer, scenes or [], (mean, std, weights), scaling, settings, ckpt,
                         state if phase == "unet" else None, progress,
                         lambda: {"vae": vae_state, "vae_loss": vae_loss, "text_accuracy": text_accuracy,
                                  "elapsed": elapsed()})
        ema.copy_to([unet])
        unet_done = max(unet_steps, state["step"]) if phase == "unet" else unet_steps
    decoder_loss = train_decoder(
        vae, pixels, masks, (mean, std), settings, ckpt, state if phase == "decoder" else None, progress,
        lambda: {"unet": unet.state_dict(), "unet_steps": unet_done, "text_encoder": text_encoder.state_dict(),
                 "scaling": scaling, "vae_loss": vae_loss, "text_accuracy": text_accuracy, "elapsed": elapsed()})
    unet_losses = [r["loss"] for r in ckpt.rows() if r["phase"] == "unet"]
    final_loss = sum(unet_losses[-100:]) / max(1, len(unet_losses[-100:]))  # one step's loss is too noisy
    facts = {
        "seed": settings.seed, "steps": unet_done, "copy_steps": settings.copy_steps, "batch": settings.batch,
        "vae_steps": settings.vae_steps, "decoder_steps": settings.decoder_steps,
        "scenes": settings.scenes, "final_loss": round(final_loss, 5), "final_loss_is": "mean of the last 100 steps",
        "vae_final_loss": round(vae_loss, 5),
        "decoder_final_loss": None if math.isnan(decoder_loss) else round(decoder_loss, 5),
        "text_readback_accuracy": round(text_accuracy, 4),
        "wall_time_s": round(elapsed(), 1), "latent_scaling": scaling,
        "model_config": settings.model.to_dict(),
    }
    export_model(out / "model", vae, text_encoder, unet, scaling, facts)
    return facts
