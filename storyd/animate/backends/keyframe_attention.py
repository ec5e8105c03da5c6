"""Keyframe attention: Consistent Self-Attention across a transition, with its two keyframes as the references.

In a video UNet every frame's spatial self-attention sees only that frame, so the look is
kept only through the motion modules and the image prompt, and it drifts where the pose
changes. Here each frame's self-attention also covers every token of the first and last frames
of its own video, which :class:`~storyd.animate.backends.animatediff.KeyframeHold` holds to the
keyframes' clean latents at every step: the paper's comic-stage idea (:mod:`storyd.csa.processor`)
applied to the frames between, training-free as reference-only attention is for one image (the
toy stage also learnt a last phase with it on: :mod:`storyd.toy.video_train`). Their
attention is weighed ``weight`` times a frame's own before normalising, so a frame draws its
look from the keyframes while its own tokens still place its pose.

It goes on the up blocks' self-attention (CSA's published layer set) and never on the motion
modules' temporal attention. A guided batch holds two videos; each attends to its own ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from storyd.csa.processor import attend_projected, self_attention_processors


class KeyframeAttnProcessor:
    """Self-attention over a frame's own tokens plus the first and last frames' of its video."""

    def __init__(self, frames: int, weight: float) -> None:
        self.frames, self.weight = frames, weight
        self.stock = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        rows = hidden_states.shape[0]
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if rows % self.frames:
            raise RuntimeError(f"keyframe attention expected {self.frames}-frame videos, got {rows} UNet rows")
        # keys and values are per token: every frame is projected once, and each row gets its video's ends
        key, value = (torch.cat([t, keyframe_tokens(t, self.frames)], dim=1)
                      for t in (attn.to_k(hidden_states), attn.to_v(hidden_states)))
        return attend_projected(attn, hidden_states, attn.to_q(hidden_states), key, value, self.weight)


def keyframe_tokens(hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
    """(B·F, N, C) → (B·F, 2N, C): each row gets its video's first and last frames' tokens."""
    rows, tokens, channels = hidden_states.shape
    videos = hidden_states.view(rows // frames, frames, tokens, channels)
    ends = videos[:, [0, -1]].reshape(rows // frames, 1, 2 * tokens, channels)
    return ends.expand(-1, frames, -1, -1).reshape(rows, 2 * tokens, channels)


@contextlib.contextmanager
def keyframe_attention(unet, frames: int, weight: float, layer_set: str = "up") -> Iterator[int]:
    """Keyframe attention on ``unet``'s chosen self-attention layers for this block; yields how many.

    ``weight`` 0 leaves the UNet as it is. The original processors come back on exit.
    """
    if weight <= 0:
        yield 0
        return
    processor = KeyframeAttnProcessor(frames, weight)
    with self_attention_processors(unet, layer_set, lambda _: processor) as chosen:
        yield len(chosen)
