"""The Semantic Motion Predictor of the toy world: trained on its clips, measured against slerp.

Clips of :mod:`storyd.toy.motion_world` are encoded frame by frame with the toy image encoder
(:mod:`storyd.toy.image_encoder`) and handed to :func:`storyd.animate.train_motion.train_motion`,
the same loop ``storyd train-motion`` runs on real videos. Held-back clips (another seed) then
say, per kind of motion, how far the predicted in-between embeddings are from the true frames'
against how far spherical interpolation between the two ends is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from storyd.animate.motion import SemanticMotionPredictor, predict_embeddings
from storyd.animate.train_motion import TrainConfig, TrainResult, train_motion
from storyd.errors import InputError
from storyd.fsutil import atomic_write_bytes
from storyd.progress import NullProgress, Progress
from storyd.toy.image_encoder import ASSETS
from storyd.toy.motion_world import FRAMES, MOTIONS, make_clips

MOTION_WEIGHTS = ASSETS / "motion" / "motion.safetensors"
EVAL_SEED = 777  # held back: training clips come from the run's --seed (0 for the shipped weights)
# The shipped predictor's shape: 2 layers of width 64 (the paper: 8 of 1024) for 65 tokens of 64 channels;
# small enough to train in minutes on two busy CPU cores.
TOY_TRAIN = TrainConfig(steps=3000, frames=FRAMES, batch_size=16, lr=1e-3, num_layers=2, hidden_dim=64, num_heads=4,
                        save_every=250, seed=0, device="cpu")
TOY_CLIPS = 1200


def shipped_motion_weights() -> Path:
    """The toy model's trained motion predictor, which ``storyd animate`` uses for the toy model by default."""
    return MOTION_WEIGHTS


@torch.no_grad()
def encode_clips(clips: list, encoder, *, progress: Progress | None = None, batch: int = 32) -> torch.Tensor:
    """(num_clips, L, N, C) token embeddings of every frame of ``clips``."""
    progress = progress or NullProgress()
    out = []
    for i in range(0, len(clips), batch):
        chunk = clips[i: i + batch]
        frames = [frame for clip in chunk for frame in clip.frames()]
        tokens = encoder.encode(frames).float().cpu()  # (B·L, N, C)
        out.append(tokens.view(len(chunk), -1, *tokens.shape[1:]))
        progress.update("encoding", min(i + batch, len(clips)), len(clips), unit="clips")
    return torch.cat(out)


def train_toy_motion(out_dir: Path, config: TrainConfig = TOY_TRAIN, *, clips: int = TOY_CLIPS, encoder=None,
                     progress: Progress | None = None) -> TrainResult:
    """Render ``clips`` clips from ``config.seed``, encode them once (cached in ``out_dir``), then train;
    re-running with the same ``out_dir`` resumes. ``encoder`` defaults to the shipped toy image encoder.

    The cache is keyed by the clips and the encoder's weights: a run in ``out_dir`` on other
    embeddings (another encoder, other clips) is refused rather than trained on into a mix."""
    from safetensors.torch import load_file, save

    out_dir = Path(out_dir)
    cache = out_dir / "embeddings.safetensors"
    if encoder is None:
        from storyd.toy.image_encoder import load_image_encoder

        encoder = load_image_encoder()
    key = json.dumps({"clips": clips, "seed": config.seed, "frames": config.frames,
                      "encoder": encoder_fingerprint(encoder)})
    if cache.exists() and _cache_key(cache) == key:
        embeddings = load_file(str(cache))["clips"]
        (progress or NullProgress()).note(f"using the clip embeddings cached in {cache}")
    elif (out_dir / "checkpoint.safetensors").exists():
        raise InputError("holds a motion predictor trained on other clip embeddings (another image encoder, "
                         "or other clips)", "pass a new -o folder", path=out_dir)
    else:
        embeddings = encode_clips(make_clips(clips, config.seed, frames=config.frames), encoder, progress=progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, save({"clips": embeddings.contiguous()}, metadata={"storyd.toy_clips": key}))
    return train_motion(embeddings, out_dir, config, progress=progress)


def encoder_fingerprint(encoder) -> str:
    """A short sha256 of the encoder's weights: which encoder the cached embeddings came from."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _cache_key(cache: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(cache), framework="pt") as handle:
        return (handle.metadata() or {}).get("storyd.toy_clips")


def embedding_error(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per clip, the mean of 1 - cos between predicted and true tokens over the inner frames: (B, L, N, C) → (B,)."""
    return (1 - F.cosine_similarity(predicted[:, 1:-1], truth[:, 1:-1], dim=-1)).mean(dim=(1, 2))


@torch.no_grad()
def compare_with_slerp(predictor: SemanticMotionPredictor, embeddings: torch.Tensor) -> dict[str, float]:
    """Mean error of the predictor and of slerp on (num_clips, L, N, C) true embeddings, and the reduction."""
    frames = embeddings.shape[1]
    start, end = embeddings[:, 0], embeddings[:, -1]
    smp = float(embedding_error(predict_embeddings(start, end, frames, predictor), embeddings).mean())
    slerp = float(embedding_error(predict_embeddings(start, end, frames, None), embeddings).mean())
    return {"smp": round(smp, 5), "slerp": round(slerp, 5), "reduction": round(1 - smp / slerp, 4)}


def evaluate_motion(predictor: SemanticMotionPredictor, encoder, *, per_motion: int = 40, seed: int = EVAL_SEED,
                    motions: tuple[str, ...] = MOTIONS,
                    progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """Per kind of motion, :func:`compare_with_slerp` on ``per_motion`` held-back clips drawn from ``seed``,
    plus the reduction on the clips whose setting stays (``same_setting``) and those where it fades."""
    clips = make_clips(per_motion * len(motions), seed, motions)
    embeddings = encode_clips(clips, encoder, progress=progress)
    kinds = torch.tensor([motions.index(c.motion) for c in clips])
    fades = torch.tensor([c.fades for c in clips])
    scores = {}
    for i, motion in enumerate(motions):
        scores[motion] = compare_with_slerp(predictor, embeddings[kinds == i])
        for label, chosen in (("same_setting", ~fades), ("changing_setting", fades)):
            if bool((chosen & (kinds == i)).any()):
                scores[motion][label] = compare_with_slerp(predictor, embeddings[chosen & (kinds == i)])["reduction"]
    return scores


def main() -> None:
    """``python -m storyd.toy.motion_train RUN [--install]``: measure RUN's ``motion.safetensors`` (from
    ``storyd train-motion --toy -o RUN``) on held-back clips and write ``training.json`` beside it; ``--install``
    copies both over the shipped predictor (then ``storyd weights lock-fill toy``)."""
    import shutil
    import sys

    from storyd.animate.motion import load_predictor
    from storyd.fsutil import atomic_write_text
    from storyd.toy.image_encoder import load_image_encoder

    args = sys.argv[1:]
    run = Path(args[0])
    predictor, metadata = load_predictor(run / "motion.safetensors")
    losses = [float(line.split(",")[1]) for line in (run / "loss.csv").read_text().splitlines()[1:]]
    facts = {"train": json.loads(_train_config(run / "checkpoint.safetensors")), "step": int(metadata["storyd.step"]),
             "loss_first_50": round(sum(losses[:50]) / len(losses[:50]), 5),
             "loss_last_50": round(sum(losses[-50:]) / len(losses[-50:]), 5),
             "held_back": evaluate_motion(predictor, load_image_encoder()),
             "held_back_seed": EVAL_SEED, "held_back_per_motion": 40}
    atomic_write_text(run / "training.json", json.dumps(facts, indent=2, sort_keys=True) + "\n")
    if "--install" in args:
        MOTION_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "motion.safetensors", MOTION_WEIGHTS)
        shutil.copyfile(run / "training.json", MOTION_WEIGHTS.parent / "training.json")
    print(json.dumps(facts, indent=2))


def _train_config(checkpoint: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as handle:
        return (handle.metadata() or {})["storyd.train_config"]


if __name__ == "__main__":
    main()
