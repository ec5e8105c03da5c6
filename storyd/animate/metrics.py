"""Transition metrics in the shape of StoryDiffusion's video comparison (Table 2 there).

For a transition of frames f_1 … f_L, with d the LPIPS-form distance below:

- **clip_token_distance_first** = mean over i = 2…L of d(f_1, f_i): how far the clip drifts from its first frame
  (the paper's LPIPS-first, on other features).
- **clip_token_distance_frames** = mean over i = 1…L−1 of d(f_i, f_{i+1}): how large the steps between
  neighbours are (the paper's LPIPS-frames, on other features).
- **clipsim_first** = mean over i = 2…L of cos(E(f_1), E(f_i)), E the CLIP image embedding.
- **clipsim_frames** = mean over i = 1…L−1 of cos(E(f_i), E(f_{i+1})).

Lower distances and higher CLIPSIM mean a smoother, more consistent clip.

LPIPS (Zhang et al. 2018) is d(x, y) = Σ_l mean_{h,w} ‖w_l ⊙ (x̂_l − ŷ_l)‖², where x̂_l are
layer-l features of a network, unit-normalised along channels, and w_l per-channel weights.
The published LPIPS uses ImageNet AlexNet/VGG features and learned w_l; neither is
available offline here (the backbones come from torchvision's model hub). So this module
implements the formula over any feature network it is given. ``load_scorer`` uses the
pinned CLIP ViT-H/14's intermediate token features with uniform w_l = 1: a perceptual
distance of the same form, but not LPIPS, and its numbers are not comparable with the
paper's; hence the names ``clip_token_distance_*``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

FeatureFn = Callable[[Sequence[np.ndarray]], list[torch.Tensor]]  # frames → per-layer (B, C, H, W) or (B, T, C)
EmbedFn = Callable[[Sequence[np.ndarray]], torch.Tensor]  # frames → (B, C) image embeddings


def lpips_form_distance(
    feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], weights: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """The LPIPS formula between two feature stacks; returns (B,). Conv maps are (B, C, H, W), token maps (B, T, C)."""
    total = 0
    for layer, (x, y) in enumerate(zip(feats_x, feats_y, strict=True)):
        channel_dim = 1 if x.ndim == 4 else -1
        x = x / (x.norm(dim=channel_dim, keepdim=True) + 1e-10)
        y = y / (y.norm(dim=channel_dim, keepdim=True) + 1e-10)
        diff = (x - y) ** 2
        if weights is not None:
            w = weights[layer]
            diff = diff * (w.view(1, -1, 1, 1) if x.ndim == 4 else w.view(1, 1, -1))
        per_position = diff.sum(dim=channel_dim)  # (B, H, W) or (B, T)
        total = total + per_position.flatten(1).mean(dim=1)
    return total


def transition_metrics(
    frames: Sequence[np.ndarray], *, features: FeatureFn, embed: EmbedFn, weights: list[torch.Tensor] | None = None
) -> dict[str, float]:
    """The four metrics of one clip (see the module docstring), as plain floats."""
    if len(frames) < 2:
        raise ValueError("a transition has at least 2 frames")
    with torch.no_grad():
        feats = features(frames)  # per layer (L, ...)
        first = [f[:1].expand_as(f[1:]) for f in feats]
        distance_first = lpips_form_distance(first, [f[1:] for f in feats], weights)
        distance_frames = lpips_form_distance([f[:-1] for f in feats], [f[1:] for f in feats], weights)
        emb = torch.nn.functional.normalize(embed(frames).float(), dim=-1)  # (L, C)
        clip_first = emb[1:] @ emb[0]
        clip_frames = (emb[:-1] * emb[1:]).sum(-1)
    return {
        "clip_token_distance_first": float(distance_first.mean()),
        "clip_token_distance_frames": float(distance_frames.mean()),
        "clipsim_first": float(clip_first.mean()),
        "clipsim_frames": float(clip_frames.mean()),
    }


def frames_to_tensor(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) frames → float (B, 3, H, W) in [−1, 1]."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


def conv_features(net: nn.Sequential, taps: Sequence[int]) -> FeatureFn:
    """A feature function that runs frames through ``net`` and keeps the outputs of the layers at ``taps``."""

    def features(frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        x = frames_to_tensor(frames).to(next(net.parameters()).device)
        out = []
        for index, layer in enumerate(net):
            x = layer(x)
            if index in taps:
                out.append(x)
        return out

    return features


def clip_token_features(encoder, layers: Sequence[int]) -> FeatureFn:
    """Token features (B, T, C) of the CLIP vision transformer after the given layers (1-based)."""

    def features(frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        out = encoder.model.vision_model(pixel_values=encoder.preprocess(frames), output_hidden_states=True)
        return [out.hidden_states[i][:, 1:].float() for i in layers]  # drop CLS: spatial tokens only

    return features


@dataclass
class TransitionScorer:
    """The metrics as one object, for ``animate(metrics=...)`` and a future ``storyd eval``."""

    features: FeatureFn
    embed: EmbedFn
    weights: list[torch.Tensor] | None = None

    def score(self, frames: Sequence[np.ndarray]) -> dict[str, float]:
        return transition_metrics(frames, features=self.features, embed=self.embed, weights=self.weights)


def load_scorer(device: str = "cpu") -> TransitionScorer:
    """The scorer on the pinned CLIP ViT-H/14: embeddings for CLIPSIM, four depths of tokens for the distances."""
    from storyd.animate.encoder import load_clip_encoder

    encoder = load_clip_encoder(device=device)
    depth = encoder.model.config.num_hidden_layers
    layers = sorted({max(1, depth * k // 4) for k in (1, 2, 3, 4)})
    return TransitionScorer(clip_token_features(encoder, layers), encoder.embed)
