"""The toy world's image encoder: a small CLIP vision tower, trained against the toy text encoder and the moving world.

The motion predictor works on image embeddings, and a hand-made embedding (pixels, say, or
the attribute reader's logits) would let it learn the world's drawing code rather than what
a picture shows. So, as CLIP's image tower was trained against its text tower, this one is
trained against the frozen toy text encoder: a batch of renders and captions naming their
characters' looks, each render's pooled embedding pulled towards its own caption's and pushed
from the others' (symmetric InfoNCE, CLIP's loss).

The tokens split the work: the pooled token says who is there, the patch tokens where they are
and how they stand. The video stage draws each frame from a transition's tokens, and where
a pose and a look shared the pooled token, a token predicted mid-motion carried a drifting
look as well (docs/toy-model.md#video-stage). So the captions name the look alone (no action,
no setting), and on frames of the world's clips (:mod:`storyd.toy.motion_world`) three more
terms, their heads dropped after training, ask: the patch tokens' mean regresses the frame's
pose truth (joints, place, lift), every patch token the kid's silhouette inside its own patch,
and the pooled tokens of two frames of one clip are pulled together (a clip keeps its look).

It is a transformers ``CLIPVisionModelWithProjection``, so :class:`storyd.animate.encoder.ClipImageEncoder`
runs it like ViT-H/14: a frame becomes ``(N, C)`` tokens, the CLS token and one per 8 px patch,
in the projected space.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from storyd.errors import InputError
from storyd.fsutil import atomic_write_text
from storyd.progress import NullProgress, Progress
from storyd.toy.captions import write_caption
from storyd.toy.motion_world import make_clips
from storyd.toy.world import LOOK_ATTRS, SIZE, random_scene, render

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "toy"
ENCODER_DIR = ASSETS / "image_encoder"


@dataclass(frozen=True)
class EncoderSettings:
    seed: int = 0
    steps: int = 2000
    batch: int = 96
    scenes: int = 4000
    clips: int = 500  # of the motion world, 16 frames each, for the pose and silhouette heads
    clip_batch: int = 64  # frames
    pose_weight: float = 1.0
    silhouette_weight: float = 10.0
    invariance_weight: float = 1.0  # two frames of one clip: squared distance of their unit pooled tokens
    lr: float = 2e-3
    width: int = 64
    layers: int = 4
    heads: int = 4
    patch: int = 8  # 8 x 8 patches at 64 px, + CLS = 65 tokens
    embed_dim: int = 64  # the toy text encoder's width
    checkpoint_every: int = 100

    def vision_config(self):
        from transformers import CLIPVisionConfig

        return CLIPVisionConfig(image_size=SIZE, patch_size=self.patch, hidden_size=self.width,
                                intermediate_size=4 * self.width, num_hidden_layers=self.layers,
                                num_attention_heads=self.heads, projection_dim=self.embed_dim)


def look_caption(scene) -> str:
    """The caption naming every look attribute of every character, and neither action nor setting."""
    return write_caption(scene, {"setting": False,
                                 "figures": [{"attrs": list(LOOK_ATTRS), "action": False} for _ in scene.figures]})


@torch.no_grad()
def caption_features(text_encoder, tokenizer, captions: list[str], batch: int = 512) -> torch.Tensor:
    """The frozen text encoder's pooled outputs (N, width) for ``captions``."""
    from storyd.toy.train import tokenize

    return torch.cat([text_encoder(tokenize(tokenizer, captions[i: i + batch])).pooler_output.float()
                      for i in range(0, len(captions), batch)])


class Contrastive(torch.nn.Module):
    """The image tower, a text-side projection (the text encoder stays frozen), CLIP's learned temperature, and the
    two auxiliary heads: the patch tokens' mean to pose truth, each patch token to the silhouette inside its patch."""

    def __init__(self, settings: EncoderSettings, text_width: int) -> None:
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        self.vision = CLIPVisionModelWithProjection(settings.vision_config())
        self.text_projection = torch.nn.Linear(text_width, settings.embed_dim, bias=False)
        self.logit_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.pose_head = torch.nn.Linear(settings.embed_dim, POSE_DIM)
        self.silhouette_head = torch.nn.Linear(settings.embed_dim, SILHOUETTE_CELLS**2)

    def loss(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over a batch: (B, 3, S, S) renders against (B, width) caption features."""
        image = F.normalize(self.vision(pixel_values=pixels).image_embeds, dim=-1)  # (B, C)
        words = F.normalize(self.text_projection(text), dim=-1)  # (B, C)
        logits = self.logit_scale.clamp(max=np.log(100)).exp() * image @ words.T  # (B, B)
        target = torch.arange(len(logits))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def pose(self, tokens: torch.Tensor) -> torch.Tensor:
        """The pose head on (B, N, C) tokens: it reads the patch tokens' mean, so the pooled token is left the look."""
        return self.pose_head(tokens[:, 1:].mean(1))

    def motion_losses(self, pixels: torch.Tensor, pose: torch.Tensor, silhouettes: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """On 2B frames, frame ``i`` and frame ``B + i`` from one clip: MSE of the pose head on (2B, POSE_DIM)
        standardised truth, of the silhouette head on (2B, P, cells²), and the pairs' unit pooled tokens' mean
        squared distance."""
        from storyd.animate.encoder import projected_tokens

        tokens = projected_tokens(self.vision, pixels)
        first, second = F.normalize(tokens[:, 0], dim=-1).chunk(2)
        return (F.mse_loss(self.pose(tokens), pose),
                F.mse_loss(self.silhouette_head(tokens[:, 1:]), silhouettes),
                (first - second).pow(2).sum(-1).mean())


POSE_DIM = 30  # 4 limbs x 3 joints x (x, y), hip, shoulder, feet, centre x, lift, setting fade
SILHOUETTE_CELLS = 4  # each patch's silhouette target: the kid's coverage on a 4 x 4 grid inside it


def pose_vector(truth, fades: bool) -> list[float]:
    """A :class:`~storyd.toy.motion_world.FrameTruth` as ``POSE_DIM`` numbers, image coordinates over ``SIZE``;
    the fade counts only where the setting does fade (``fades``), else a frame would be asked for its time."""
    joints = [v for chain in truth.pose["legs"] + truth.pose["arms"] for point in chain for v in point]
    values = [*joints, truth.pose["hip"], truth.pose["shoulder"], truth.feet, truth.x, truth.lift]
    return [v / SIZE for v in values] + [truth.fade if fades else 0.0]


def silhouette_targets(masks: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, S, S) kid masks in [0, 1] → (B, P, cells²): per patch, row by row as the tower orders them, the
    kid's coverage of each cell of a ``SILHOUETTE_CELLS`` grid inside it."""
    b, size = masks.shape[0], masks.shape[-1]
    cells = F.adaptive_avg_pool2d(masks.unsqueeze(1), size * SILHOUETTE_CELLS // patch)  # (B, 1, G·c, G·c)
    grid = size // patch
    cells = cells.view(b, grid, SILHOUETTE_CELLS, grid, SILHOUETTE_CELLS).permute(0, 1, 3, 2, 4)
    return cells.reshape(b, grid * grid, SILHOUETTE_CELLS**2)


def clip_frame_tensors(clips: list, encoder_view) -> dict[str, torch.Tensor]:
    """Every frame of ``clips``: pixels as the encoder sees them, raw pose vectors, kid masks (0 to 1)."""
    frames = [frame for clip in clips for frame in clip.frames()]
    pose = torch.tensor([pose_vector(t, clip.fades) for clip in clips for t in clip.truth], dtype=torch.float32)
    masks = torch.stack([torch.from_numpy(np.asarray(clip.mask(i), dtype=np.float32) / 255)
                         for clip in clips for i in range(len(clip.truth))])
    return {"pixels": encoder_view.preprocess(frames), "pose": pose, "masks": masks}


def render_pixels(scenes: list, encoder_view) -> torch.Tensor:
    """Renders of ``scenes``, preprocessed as the shipped encoder sees them (CLIP's mean and std)."""
    return encoder_view.preprocess([render(s) for s in scenes])


def train_image_encoder(out: Path, settings: EncoderSettings, text_encoder, tokenizer, *, resume: bool = False,
                        progress: Progress | None = None) -> dict:
    """Train into ``out`` (``checkpoints/last.pt``, ``loss.jsonl``, and the model in ``out/image_encoder``);
    deterministic from ``settings.seed``, and a resumed run takes the steps an unbroken one would. Returns facts."""
    from storyd.animate.encoder import ClipImageEncoder
    from storyd.toy.train import Checkpoints, step_generator

    progress = progress or NullProgress()
    ckpt = Checkpoints(Path(out))
    state = ckpt.open_run(resume, lambda saved: saved == asdict(settings))
    started = time.monotonic()
    rng = random.Random(settings.seed)
    scenes = [random_scene(rng) for _ in range(settings.scenes)]
    text = caption_features(text_encoder, tokenizer, [look_caption(s) for s in scenes])
    with torch.random.fork_rng(devices=[]):  # transformers initialises from the default generator
        torch.manual_seed(settings.seed)
        model = Contrastive(settings, text.shape[1])
    view = ClipImageEncoder(model.vision)  # CLIP's preprocessing at the tower's size
    pixels = render_pixels(scenes, view)
    clips = make_clips(settings.clips, settings.seed)
    moving = clip_frame_tensors(clips, view)
    frames_per_clip = len(clips[0].truth)
    pose_mean, pose_std = moving["pose"].mean(0), moving["pose"].std(0).clamp_min(1e-3)
    moving["pose"] = (moving["pose"] - pose_mean) / pose_std
    moving["silhouettes"] = silhouette_targets(moving.pop("masks"), settings.patch)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.05)
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        progress.note(f"resuming from step {start} ({ckpt.path})")
    ckpt.truncate_log("image_encoder", start, order=("image_encoder",))
    model.train()
    loss_value = float("nan")
    for step in range(start, settings.steps):
        g = step_generator(settings.seed, "image_encoder", step)
        index = torch.randperm(len(scenes), generator=g)[: settings.batch]
        which = torch.randperm(len(clips), generator=g)[: settings.clip_batch // 2]
        first, second = (torch.randint(0, frames_per_clip, (len(which),), generator=g) for _ in range(2))
        frames = torch.cat([which * frames_per_clip + first, which * frames_per_clip + second])
        for group in opt.param_groups:
            group["lr"] = settings.lr * min(1.0, (step + 1) / 100) * (1 - step / settings.steps)
        contrastive = model.loss(pixels[index], text[index])
        pose, silhouette, invariance = model.motion_losses(moving["pixels"][frames], moving["pose"][frames],
                                                           moving["silhouettes"][frames])
        loss = (contrastive + settings.pose_weight * pose + settings.silhouette_weight * silhouette
                + settings.invariance_weight * invariance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = loss.item()
        ckpt.log({"phase": "image_encoder", "step": step + 1, "loss": round(loss_value, 6),
                  "contrastive": round(contrastive.item(), 6), "pose": round(pose.item(), 6),
                  "silhouette": round(silhouette.item(), 6), "invariance": round(invariance.item(), 6)})
        progress.update("image encoder", step + 1, settings.steps, unit="steps", detail=f"loss {loss_value:.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                       "settings": asdict(settings)})
    model.eval()
    facts = {**asdict(settings), "final_loss": round(loss_value, 4),
             "wall_time_s": round(time.monotonic() - started, 1),
             "retrieval_top1": retrieval_accuracy(model, text_encoder, tokenizer, seed=settings.seed + 10_000),
             "held_back_pose_r2": pose_r2(model, (pose_mean, pose_std), seed=settings.seed + 10_000)}
    save_image_encoder(Path(out) / "image_encoder", model.vision, facts)
    return facts


@torch.no_grad()
def retrieval_accuracy(model: Contrastive, text_encoder, tokenizer, *, seed: int, count: int = 256) -> float:
    """On ``count`` held-back renders: how often a render's nearest caption (of the ``count``) is its own."""
    from storyd.animate.encoder import ClipImageEncoder

    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    text = F.normalize(model.text_projection(
        caption_features(text_encoder, tokenizer, [look_caption(s) for s in scenes])), dim=-1)
    image = F.normalize(model.vision(pixel_values=render_pixels(scenes, ClipImageEncoder(model.vision))).image_embeds,
                        dim=-1)
    return round(float(((image @ text.T).argmax(1) == torch.arange(count)).float().mean()), 4)


@torch.no_grad()
def pose_r2(model: Contrastive, standardise: tuple[torch.Tensor, torch.Tensor], *, seed: int, clips: int = 60) -> float:
    """On the frames of ``clips`` held-back clips: the fraction of the pose truth's variance the pose head explains
    from the patch tokens' mean."""
    from storyd.animate.encoder import ClipImageEncoder, projected_tokens

    held = clip_frame_tensors(make_clips(clips, seed), ClipImageEncoder(model.vision))
    truth = (held["pose"] - standardise[0]) / standardise[1]
    predicted = model.pose(projected_tokens(model.vision, held["pixels"]))
    return round(float(1 - ((predicted - truth) ** 2).mean() / truth.var(0).mean()), 4)


def save_image_encoder(folder: Path, vision, facts: dict) -> None:
    """``config.json`` and ``model.safetensors`` (transformers' layout), and the training facts beside them."""
    vision.save_pretrained(folder, safe_serialization=True)
    atomic_write_text(folder / "training.json", json.dumps(facts, indent=2, sort_keys=True) + "\n")


def load_image_encoder(folder: Path | None = None, *, device: str | torch.device = "cpu"):
    """The toy image encoder (by default the shipped one) as a :class:`~storyd.animate.encoder.ClipImageEncoder`."""
    from transformers import CLIPVisionModelWithProjection

    from storyd.animate.encoder import ClipImageEncoder
    from storyd.render.pipelines import quiet_loading

    folder = Path(folder or ENCODER_DIR)
    if not (folder / "config.json").exists():
        raise InputError("no toy image encoder here", "train one with `storyd train-toy-motion`", path=folder)
    with quiet_loading():
        model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
    return ClipImageEncoder(model, device=device)


def main() -> None:
    """``python -m storyd.toy.image_encoder OUT [--resume] [--install]``: train on the CPU from seed 0, print the
    facts; ``--install`` copies the result over the shipped encoder (then ``storyd weights lock-fill toy``)."""
    import shutil
    import sys

    from transformers import CLIPTextModel

    from storyd.cli.common import Output
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.weights.paths import storyd_home

    args = sys.argv[1:]
    out = Path(args[0])
    text_encoder = CLIPTextModel.from_pretrained(str(ASSETS / "text_encoder"), dtype=torch.float32).eval()
    with Output().progress() as progress:
        facts = train_image_encoder(out, EncoderSettings(), text_encoder, load_clip_tokenizer(storyd_home()),
                                    resume="--resume" in args, progress=progress)
    if "--install" in args:
        shutil.rmtree(ENCODER_DIR, ignore_errors=True)
        shutil.copytree(out / "image_encoder", ENCODER_DIR)
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
