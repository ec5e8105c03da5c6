"""Train the Semantic Motion Predictor in embedding space.

Each training example is a clip of L consecutive video frames encoded with the
CLIP image encoder, (L, N, C). The predictor sees only the first and last
frame's embeddings and is trained (MSE) to predict the L−2 frames between.
This is a cheaper stand-in for the paper's end-to-end objective (MSE between
generated and real video through the video model), which needs a GPU cluster.

``OUT`` holds ``embeddings.safetensors`` (the encoded clips, so a resumed run
does not re-encode), ``checkpoint.safetensors`` (weights, optimiser state and
step: a re-run with the same ``OUT`` resumes from it), ``motion.safetensors``
(weights only, for ``storyd animate --motion-weights``) and ``loss.csv``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from storyd.animate.frames import natural_key
from storyd.animate.motion import MotionPredictorConfig, SemanticMotionPredictor, save_predictor
from storyd.errors import InputError
from storyd.fsutil import atomic_write_bytes
from storyd.progress import NullProgress, Progress
from storyd.render.device import pick_device

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    frames: int = 16  # L, both ends included
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    num_layers: int = 8
    hidden_dim: int = 1024
    num_heads: int = 16
    save_every: int = 100
    seed: int = 0
    device: str = "auto"  # storyd.render.device.pick_device's policy

    def model_config(self, num_tokens: int, embed_dim: int) -> MotionPredictorConfig:
        return MotionPredictorConfig(
            embed_dim=embed_dim,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_tokens=num_tokens,
            max_frames=max(self.frames, 16),
        )


@dataclass
class TrainResult:
    step: int
    first_loss: float  # the first logged loss of this run (NaN if it had no steps left)
    last_loss: float
    clips: int
    checkpoint: Path  # motion.safetensors
    log: Path

    def to_dict(self) -> dict:
        return {**asdict(self), "checkpoint": str(self.checkpoint), "log": str(self.log)}


def train_motion(
    clips: torch.Tensor,
    out_dir: Path,
    config: TrainConfig,
    *,
    progress: Progress | None = None,
) -> TrainResult:
    """Train on ``clips`` (num_clips, L, N, C); resumes from ``out_dir/checkpoint.safetensors`` if present."""
    if clips.ndim != 4 or clips.shape[1] != config.frames:
        raise ValueError(f"clips must be (num_clips, {config.frames}, N, C), got {tuple(clips.shape)}")
    if config.frames < 3:
        raise InputError(f"--frames {config.frames} leaves no middle frames to predict", "use at least 3")
    config = replace(config, device=pick_device(config.device))  # the checkpoint records the device used
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or NullProgress()
    device = torch.device(config.device)
    model_config = config.model_config(clips.shape[2], clips.shape[3])
    init = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(int(torch.randint(2**31, (1,), generator=init)))
        model = SemanticMotionPredictor(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    checkpoint = out_dir / "checkpoint.safetensors"
    step = _resume(checkpoint, model, optimizer, model_config) if checkpoint.exists() else 0
    if step:
        progress.note(f"resuming from step {step} ({checkpoint})")
    log_path = out_dir / "loss.csv"
    if not log_path.exists():
        log_path.write_text("step,loss\n", encoding="utf-8")
    clips = clips.to(device)
    first: float | None = None
    last = float("nan")
    model.train()
    with log_path.open("a", encoding="utf-8") as log:
        while step < config.steps:
            batch_gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)  # same batches after a resume
            index = torch.randint(clips.shape[0], (config.batch_size,), generator=batch_gen)
            batch = clips[index.to(device)]  # (B, L, N, C)
            predicted = model(batch[:, 0], batch[:, -1], config.frames)  # (B, L, N, C)
            loss = F.mse_loss(predicted[:, 1:-1], batch[:, 1:-1])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            last = float(loss.detach())
            first = last if first is None else first
            log.write(f"{step},{last:.6f}\n")
            if step % config.save_every == 0 or step == config.steps:
                log.flush()
                _save(checkpoint, out_dir / "motion.safetensors", model, optimizer, step, config)
            progress.update("training", step, config.steps, unit="steps", detail=f"loss {last:.5f}")
    if not (out_dir / "motion.safetensors").exists():
        _save(checkpoint, out_dir / "motion.safetensors", model, optimizer, step, config)
    first_loss = float("nan") if first is None else first
    return TrainResult(step, first_loss, last, int(clips.shape[0]), out_dir / "motion.safetensors", log_path)


def _save(checkpoint: Path, weights: Path, model, optimizer, step: int, config: TrainConfig) -> None:
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "storyd.motion_config": model.config.to_json(),
        "storyd.train_config": json.dumps(asdict(config), sort_keys=True),
        "storyd.step": str(step),
    }
    atomic_write_bytes(checkpoint, save(tensors, metadata=metadata))
    save_predictor(weights, model, extra={"storyd.step": str(step)})


def _resume(checkpoint: Path, model, optimizer, model_config: MotionPredictorConfig) -> int:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata() or {}
    saved = json.loads(metadata.get("storyd.motion_config", "{}"))
    if saved != json.loads(model_config.to_json()):
        raise InputError(
            "holds a checkpoint of a different model configuration",
            "re-run with the options it was trained with, or pick a new -o folder",
            path=checkpoint,
        )
    tensors = load_file(str(checkpoint))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    state = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(state)
    return int(metadata["storyd.step"])


def list_videos(videos_dir: Path) -> list[Path]:
    """The video files in ``videos_dir``, in natural name order; at least one."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise InputError(
            "no such folder", "pass a folder of video clips (MP4, WebM, MOV, MKV, AVI, GIF)", path=videos_dir
        )
    videos = sorted(
        (p for p in videos_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES),
        key=lambda p: natural_key(p.name),
    )
    if not videos:
        raise InputError("no video files found", "add clips with suffix " + ", ".join(VIDEO_SUFFIXES), path=videos_dir)
    return videos


def encode_clips(
    videos: list[Path], encoder, frames: int, *, progress: Progress | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Cut every video into non-overlapping clips of ``frames`` frames and encode them.

    Returns (num_clips, L, N, C) embeddings and the names of the videos used.
    """
    from storyd.animate.video import read_video

    progress = progress or NullProgress()
    clips, used = [], []
    for i, path in enumerate(videos):
        progress.update("encoding", i, len(videos), unit="videos", detail=path.name)
        try:
            video = read_video(path)
        except (OSError, RuntimeError, StopIteration) as exc:
            problem = f"not a readable video ({exc.__class__.__name__})"
            raise InputError(problem, "remove or re-encode it", path=path) from None
        for start in range(0, len(video) - frames + 1, frames):
            clips.append(encoder.encode(video[start : start + frames]).float().cpu())  # (L, N, C)
        if len(video) >= frames:
            used.append(path.name)
    if not clips:
        raise InputError(
            f"no video with at least {frames} frames", "add longer clips, or lower --frames", path=videos[0].parent
        )
    return torch.stack(clips), used


def train_motion_from_videos(
    videos_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    *,
    encoder=None,
    progress: Progress | None = None,
) -> TrainResult:
    """Encode the clips once (cached in ``out_dir``), then :func:`train_motion`. ``encoder`` defaults to pinned CLIP."""
    from safetensors.torch import load_file, save

    config = replace(config, device=pick_device(config.device))  # one device for the encoder and the training
    out_dir = Path(out_dir)
    cache = out_dir / "embeddings.safetensors"
    if cache.exists() and load_file(str(cache))["clips"].shape[1] == config.frames:
        clips = load_file(str(cache))["clips"]
        if progress is not None:
            progress.note(f"using the clip embeddings cached in {cache}")
    else:
        videos = list_videos(videos_dir)  # checked before the encoder loads
        if encoder is None:
            from storyd.animate.encoder import load_clip_encoder

            encoder = load_clip_encoder(device=config.device)
        clips, used = encode_clips(videos, encoder, config.frames, progress=progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, save({"clips": clips.contiguous()}, metadata={"videos": json.dumps(used)}))
    return train_motion(clips, out_dir, config, progress=progress)
