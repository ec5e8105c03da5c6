"""Keyframe attention: each frame's self-attention also covers its own video's first and last frames."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from PIL import Image

from storyd.animate.backends.keyframe_attention import KeyframeAttnProcessor, keyframe_attention, keyframe_tokens
from storyd.animate.backends.tiny_animatediff import tiny_animatediff_backend


@pytest.fixture(scope="module")
def backend():
    return tiny_animatediff_backend(steps=2)


def test_each_row_gets_its_own_videos_ends():
    frames, tokens = 3, 2
    rows = torch.arange(2 * frames, dtype=torch.float32).view(-1, 1, 1).expand(-1, tokens, 1)  # row r holds r
    ends = keyframe_tokens(rows, frames)[:, :, 0]  # (rows, 2·tokens)
    assert ends.tolist() == [[0, 0, 2, 2]] * 3 + [[3, 3, 5, 5]] * 3  # a guided batch's two videos never mix


def test_the_weight_counts_the_keyframes_tokens_as_that_many_copies():
    """Weight w multiplies the keyframes' attention before normalising: the same as w copies of their keys."""
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    x = torch.randn(4 * 2, 5, 8)  # two videos of four frames, five tokens each
    ends = keyframe_tokens(x, 4)
    with torch.no_grad():
        weighted = KeyframeAttnProcessor(4, 3.0)(attn, x)
        copies = AttnProcessor2_0()(attn, x, encoder_hidden_states=torch.cat([x, ends, ends, ends], dim=1))
        plain = AttnProcessor2_0()(attn, x)
    assert torch.allclose(weighted, copies, atol=1e-5)
    assert not torch.allclose(weighted, plain, atol=1e-3)
    with pytest.raises(RuntimeError, match="4-frame videos"):
        KeyframeAttnProcessor(4, 3.0)(attn, x[:7])


def test_it_patches_the_up_blocks_spatial_self_attention_only_and_restores_the_unet(backend):
    unet = backend.pipe.unet
    before = dict(unet.attn_processors)
    with keyframe_attention(unet, 6, 0.0) as patched:
        assert patched == 0 and unet.attn_processors == before
    with keyframe_attention(unet, 6, 8.0) as patched:
        now = unet.attn_processors
        changed = sorted(name for name in now if now[name] is not before[name])
        assert patched == len(changed) > 0
        assert all(n.startswith("up_blocks.") and n.endswith("attn1.processor") and "motion_modules" not in n
                   for n in changed), changed
        assert all(isinstance(now[n], KeyframeAttnProcessor) for n in changed)
    assert all(unet.attn_processors[n] is p for n, p in before.items())


def test_the_backend_draws_other_frames_between_with_it_and_the_same_ends(backend):
    rng = np.random.RandomState(0)
    start, end = (Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2))
    on = backend.render(start, end, 6, "a cat")
    off = replace(backend, keyframe_attention=0.0).render(start, end, 6, "a cat")
    assert np.array_equal(on[0], off[0]) and np.array_equal(on[-1], off[-1])  # the held ends are the keyframes
    assert all(not np.array_equal(a, b) for a, b in zip(on[1:-1], off[1:-1], strict=True))
