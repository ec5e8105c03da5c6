"""A per-frame image prompt for the video UNet, in the style of IP-Adapter.

IP-Adapter adds, beside each cross-attention to the text, a second attention to
a few image tokens and sums the two. diffusers' AnimateDiff path repeats one
image prompt over all frames; StoryDiffusion conditions frame i on its own
predicted embedding P_i. So the image tokens here are (B·F, T, D), one set per
frame in the (batch, frame) order UNetMotionModel folds frames into, held in an
explicit :class:`ImagePromptState` that the sampler fills before each UNet call.

The layer and key names follow the IP-Adapter SD1.5 checkpoint
(``image_proj.proj``, ``image_proj.norm``, ``ip_adapter.{i}.to_k_ip`` / ``to_v_ip``)
so its weights load unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ImagePromptProjection(nn.Module):
    """Pooled CLIP image embedding (B, C) → T image tokens (B, T, D) for cross-attention."""

    def __init__(self, image_embed_dim: int, cross_attention_dim: int, num_tokens: int = 4) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.cross_attention_dim = cross_attention_dim
        self.proj = nn.Linear(image_embed_dim, num_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(embeds).reshape(-1, self.num_tokens, self.cross_attention_dim)  # (B, T, D)
        return self.norm(tokens)


@dataclass
class ImagePromptState:
    """What every per-frame image-prompt processor reads during one UNet call."""

    tokens: torch.Tensor | None = None  # (B·F, T, D); None switches the image prompt off
    scale: float = 1.0


class PerFrameImagePromptAttnProcessor(nn.Module):
    """Cross-attention to the text plus ``scale`` × attention to this frame's image tokens."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, state: ImagePromptState) -> None:
        super().__init__()
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert hidden_states.ndim == 3, "the image prompt is installed on transformer cross-attention only"
        residual = hidden_states
        batch, _, _ = hidden_states.shape  # (B·F, S, hidden)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        query = self._heads(attn, attn.to_q(hidden_states))  # (B·F, heads, S, d)
        key = self._heads(attn, attn.to_k(encoder_hidden_states))
        value = self._heads(attn, attn.to_v(encoder_hidden_states))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        tokens = self.state.tokens
        if tokens is not None and self.state.scale != 0:
            if tokens.shape[0] != batch:
                raise ValueError(f"image prompt holds {tokens.shape[0]} frames, the UNet call has {batch}")
            tokens = tokens.to(hidden_states.dtype)
            ip_key = self._heads(attn, self.to_k_ip(tokens))  # (B·F, heads, T, d)
            ip_value = self._heads(attn, self.to_v_ip(tokens))
            out = out + self.state.scale * F.scaled_dot_product_attention(query, ip_key, ip_value)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1])  # (B·F, S, hidden)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    @staticmethod
    def _heads(attn, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, attn.heads, width // attn.heads).transpose(1, 2)


def image_prompt_layers(unet) -> dict[str, int]:
    """Processor key → IP-Adapter layer index, for the spatial cross-attention layers of ``unet``.

    IP-Adapter numbers the UNet's attention processors in order, self- and
    cross-attention alike, and only the cross-attention ones (odd numbers) carry
    weights; AnimateDiff's motion-module attention is not counted.
    """
    spatial = [name for name in unet.attn_processors if "motion_modules" not in name]
    return {name: i for i, name in enumerate(spatial) if name.endswith("attn2.processor")}


def build_image_prompt_processors(unet, state: ImagePromptState) -> dict[str, PerFrameImagePromptAttnProcessor]:
    """One fresh processor per spatial cross-attention layer, sized from the layer itself."""
    processors = {}
    for name in image_prompt_layers(unet):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        processors[name] = PerFrameImagePromptAttnProcessor(attn.to_q.out_features, attn.to_k.in_features, state)
    return processors


def load_image_prompt_weights(
    projection: ImagePromptProjection, processors: dict[str, PerFrameImagePromptAttnProcessor], unet, state_dict: dict
) -> None:
    """Load an IP-Adapter SD1.5 state dict (flat ``image_proj.*`` / ``ip_adapter.*`` keys) into the modules."""
    proj = {k.removeprefix("image_proj."): v for k, v in state_dict.items() if k.startswith("image_proj.")}
    projection.load_state_dict(proj)
    for name, index in image_prompt_layers(unet).items():
        processors[name].load_state_dict(
            {
                "to_k_ip.weight": state_dict[f"ip_adapter.{index}.to_k_ip.weight"],
                "to_v_ip.weight": state_dict[f"ip_adapter.{index}.to_v_ip.weight"],
            }
        )


@contextlib.contextmanager
def image_prompt_installed(unet, processors: dict[str, PerFrameImagePromptAttnProcessor]) -> Iterator[None]:
    """Install ``processors`` on their layers for the duration of the block, then restore the originals."""
    originals = dict(unet.attn_processors)
    unet.set_attn_processor({**originals, **processors})  # set_attn_processor pops from the dict it gets
    try:
        yield
    finally:
        unet.set_attn_processor(dict(originals))
