"""The Semantic Motion Predictor (SMP) and its untrained fallback, spherical interpolation.

StoryDiffusion (§3.2) encodes the start and end frames into token-level CLIP
embeddings K_s, K_e (N tokens × C), interpolates them linearly to L frames, and
refines that sequence with a transformer into one predicted embedding P_i per
frame; the video model is then conditioned on P_i frame by frame.

Here the transformer predicts a *residual* on top of the interpolation, its
output projection starts at zero, and the residual is masked to zero on the
first and last frame. So an untrained predictor returns the interpolation
unchanged, and the endpoints always equal the keyframes' own embeddings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from storyd.errors import InputError


@dataclass(frozen=True)
class MotionPredictorConfig:
    """Shape of the SMP. The defaults follow the paper except ``num_heads``.

    The paper gives 8 layers, hidden size 1024 and 12 heads, but 1024 is not
    divisible by 12. 16 heads give 64-wide heads, the head width of both the
    ViT-H/14 encoder and SD1.5's attention.
    """

    embed_dim: int = 1024  # C: CLIP ViT-H/14 projection width (token features are projected into it)
    hidden_dim: int = 1024
    num_layers: int = 8
    num_heads: int = 16
    num_tokens: int = 257  # N: 16×16 patches + CLS at 224 px
    max_frames: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def lerp_embeddings(start: torch.Tensor, end: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, N, C) × 2 → (B, L, N, C): K_i = (1 − t_i)·K_s + t_i·K_e with t_i = i / (L − 1)."""
    t = torch.linspace(0, 1, frames, dtype=start.dtype, device=start.device).view(1, frames, 1, 1)
    return (1 - t) * start.unsqueeze(1) + t * end.unsqueeze(1)


def slerp_embeddings(start: torch.Tensor, end: torch.Tensor, frames: int, eps: float = 1e-6) -> torch.Tensor:
    """(B, N, C) × 2 → (B, L, N, C): per token, the direction moves along the great circle, the norm linearly.

    CLIP features are compared by cosine, so this keeps every frame's tokens at a
    plausible length where a straight line between two directions would shrink them.
    """
    t = torch.linspace(0, 1, frames, dtype=start.dtype, device=start.device).view(1, frames, 1, 1)
    s_norm = start.norm(dim=-1, keepdim=True).clamp_min(eps)  # (B, N, 1)
    e_norm = end.norm(dim=-1, keepdim=True).clamp_min(eps)
    s_dir, e_dir = start / s_norm, end / e_norm
    cos = (s_dir * e_dir).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)  # (B, N, 1)
    omega = torch.acos(cos).unsqueeze(1)  # (B, 1, N, 1)
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-4  # nearly equal directions: fall back to lerp of directions
    w_s = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / sin.clamp_min(1e-4))
    w_e = torch.where(parallel, t, torch.sin(t * omega) / sin.clamp_min(1e-4))
    direction = w_s * s_dir.unsqueeze(1) + w_e * e_dir.unsqueeze(1)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(eps)
    norm = (1 - t) * s_norm.unsqueeze(1) + t * e_norm.unsqueeze(1)
    return direction * norm


class SemanticMotionPredictor(nn.Module):
    """Transformer over all L·N tokens of the interpolated sequence, with frame and token position embeddings."""

    def __init__(self, config: MotionPredictorConfig) -> None:
        super().__init__()
        self.config = config
        self.in_proj = nn.Linear(config.embed_dim, config.hidden_dim)
        self.frame_pos = nn.Parameter(torch.zeros(config.max_frames, config.hidden_dim))
        self.token_pos = nn.Parameter(torch.zeros(config.num_tokens, config.hidden_dim))
        nn.init.normal_(self.frame_pos, std=0.02)
        nn.init.normal_(self.token_pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            config.hidden_dim,
            config.num_heads,
            dim_feedforward=int(config.hidden_dim * config.mlp_ratio),
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden_dim)
        self.out_proj = nn.Linear(config.hidden_dim, config.embed_dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, start: torch.Tensor, end: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, N, C) start and end token embeddings → (B, L, N, C) predicted per-frame embeddings."""
        cfg = self.config
        batch, tokens, channels = start.shape
        assert end.shape == start.shape, f"start {tuple(start.shape)} and end {tuple(end.shape)} differ"
        assert channels == cfg.embed_dim, f"embedding width {channels} != config.embed_dim {cfg.embed_dim}"
        assert tokens == cfg.num_tokens, f"{tokens} tokens != config.num_tokens {cfg.num_tokens}"
        assert 2 <= frames <= cfg.max_frames, f"frames {frames} outside 2..{cfg.max_frames}"
        base = lerp_embeddings(start, end, frames)  # (B, L, N, C)
        x = self.in_proj(base) + self.frame_pos[:frames, None, :] + self.token_pos[None, :tokens, :]  # (B, L, N, H)
        x = self.blocks(x.reshape(batch, frames * tokens, cfg.hidden_dim))  # (B, L·N, H)
        residual = self.out_proj(self.norm(x)).view(batch, frames, tokens, channels)
        inner = torch.ones(frames, dtype=base.dtype, device=base.device)
        inner[0] = inner[-1] = 0  # the keyframes keep their own embeddings
        return base + residual * inner.view(1, frames, 1, 1)


def predict_embeddings(
    start: torch.Tensor, end: torch.Tensor, frames: int, predictor: SemanticMotionPredictor | None
) -> torch.Tensor:
    """Per-frame embeddings (B, L, N, C): the trained SMP when given, else spherical interpolation."""
    if predictor is None:
        return slerp_embeddings(start, end, frames)
    with torch.no_grad():
        return predictor(start, end, frames)


def save_predictor(path: Path, model: SemanticMotionPredictor, *, extra: dict[str, str] | None = None) -> None:
    """Save weights as safetensors; the config travels in the metadata so the file rebuilds its own model."""
    from safetensors.torch import save

    from storyd.fsutil import atomic_write_bytes

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"storyd.motion_config": model.config.to_json(), **(extra or {})}
    atomic_write_bytes(Path(path), save(state, metadata=metadata))


def load_predictor(path: Path, device: str | torch.device = "cpu") -> tuple[SemanticMotionPredictor, dict[str, str]]:
    """Rebuild a predictor from a file written by :func:`save_predictor`; returns it with the file's metadata."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        config = MotionPredictorConfig(**json.loads(metadata["storyd.motion_config"]))
        model = SemanticMotionPredictor(config)
        model.load_state_dict(load_file(str(path)))
    except FileNotFoundError:
        raise InputError("no such motion checkpoint", "train one with `storyd train-motion`", path=path) from None
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(
            f"not a storyd motion checkpoint ({exc.__class__.__name__})",
            "pass a file written by `storyd train-motion`",
            path=path,
        ) from None
    return model.to(device).eval(), metadata
