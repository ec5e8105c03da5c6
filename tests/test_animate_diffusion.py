"""The video diffusion backend on tiny models built from configs (random weights, CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from storyd.animate import animate
from storyd.animate.diffusion import DiffusionBackend, SamplerConfig, sample_transition, window_starts
from storyd.animate.image_prompt import image_prompt_installed, image_prompt_layers, load_image_prompt_weights
from storyd.animate.motion import MotionPredictorConfig, SemanticMotionPredictor
from storyd.animate.tiny import CROSS_DIM, IMAGE_DIM, tiny_clip_encoder, tiny_video_models
from storyd.animate.video import read_video
from storyd.errors import InputError


def pictures(size=(24, 16)):
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)) for _ in range(2)]


FAST = SamplerConfig(steps=2, window=4, stride=2)


def test_window_starts_cover_every_frame_with_overlap():
    assert window_starts(3, 16, 8) == [0]
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    for frames, window, stride in [(10, 4, 2), (11, 4, 3), (20, 16, 8)]:
        covered = set()
        for s in window_starts(frames, window, stride):
            covered |= set(range(s, s + window))
        assert covered == set(range(frames))


def test_sample_transition_yields_L_frames_of_the_keyframe_size():
    models = tiny_video_models()
    start, end = pictures()
    embeds = torch.randn(7, IMAGE_DIM, generator=torch.Generator().manual_seed(0))
    before = dict(models.unet.attn_processors)
    frames = sample_transition(models, start, end, embeds, "a cat", FAST, torch.Generator().manual_seed(0))
    assert len(frames) == 7  # 7 frames through windows of 4: [0, 2] + [3]
    assert all(f.shape == (16, 24, 3) and f.dtype == np.uint8 for f in frames)
    for frame in frames:  # decoded, never the pasted keyframes
        assert not np.array_equal(frame, np.asarray(start)) and not np.array_equal(frame, np.asarray(end))
    assert {k: type(v) for k, v in models.unet.attn_processors.items()} == {k: type(v) for k, v in before.items()}
    assert models.image_prompt.tokens is None
    again = sample_transition(models, start, end, embeds, "a cat", FAST, torch.Generator().manual_seed(0))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))  # seeded: reproducible


def test_last_keyframe_sparsectrl_and_anchoring_each_change_the_frames():
    models = tiny_video_models()
    start = pictures()[0]
    end, other = Image.new("RGB", (24, 16)), Image.new("RGB", (24, 16), (255, 255, 255))  # the tiny VAE averages noise
    embeds = torch.randn(5, IMAGE_DIM, generator=torch.Generator().manual_seed(0))
    config = SamplerConfig(steps=2, window=4, stride=2, anchor=False)

    def run(models, end, config):
        return sample_transition(models, start, end, embeds, "x", config, torch.Generator().manual_seed(0))

    base = run(models, end, config)
    changed = run(models, other, config)  # SparseCtrl alone carries the last keyframe here
    assert all(not np.array_equal(a, b) for a, b in zip(base[1:-1], changed[1:-1]))
    without_control = run(tiny_video_models(control=False), end, config)
    assert all(not np.array_equal(a, b) for a, b in zip(base, without_control))
    anchored = run(models, end, SamplerConfig(**{**config.__dict__, "anchor": True}))
    assert not np.array_equal(base[2], anchored[2])


def test_per_frame_embeddings_reach_the_unet():
    models = tiny_video_models(control=False)
    start, end = pictures()
    config = SamplerConfig(steps=1, window=4, stride=2, guidance_scale=1.0, image_prompt_scale=1.0)
    embeds = torch.randn(4, IMAGE_DIM, generator=torch.Generator().manual_seed(0))
    changed = embeds.clone()
    changed[2] = torch.randn(IMAGE_DIM, generator=torch.Generator().manual_seed(5))
    a = sample_transition(models, start, end, embeds, "x", config, torch.Generator().manual_seed(0))
    b = sample_transition(models, start, end, changed, "x", config, torch.Generator().manual_seed(0))
    assert not np.array_equal(a[2], b[2])  # frame 2's own embedding changed it
    off = SamplerConfig(**{**config.__dict__, "image_prompt_scale": 0.0})
    c = sample_transition(models, start, end, embeds, "x", off, torch.Generator().manual_seed(0))
    d = sample_transition(models, start, end, changed, "x", off, torch.Generator().manual_seed(0))
    assert all(np.array_equal(x, y) for x, y in zip(c, d, strict=True))  # scale 0: the image prompt is off


def test_ip_adapter_checkpoint_keys_load():
    models = tiny_video_models(control=False)
    layers = image_prompt_layers(models.unet)
    assert list(layers.values()) == [1, 3, 5, 7]  # odd: IP-Adapter counts self- and cross-attention
    state_dict = {
        "image_proj.proj.weight": torch.ones(4 * CROSS_DIM, IMAGE_DIM),
        "image_proj.proj.bias": torch.zeros(4 * CROSS_DIM),
        "image_proj.norm.weight": torch.ones(CROSS_DIM),
        "image_proj.norm.bias": torch.zeros(CROSS_DIM),
    }
    for name, index in layers.items():
        hidden = models.processors[name].to_k_ip.out_features
        state_dict[f"ip_adapter.{index}.to_k_ip.weight"] = torch.full((hidden, CROSS_DIM), float(index))
        state_dict[f"ip_adapter.{index}.to_v_ip.weight"] = torch.zeros(hidden, CROSS_DIM)
    load_image_prompt_weights(models.image_projection, models.processors, models.unet, state_dict)
    for name, index in layers.items():
        assert torch.all(models.processors[name].to_k_ip.weight == index)
    with image_prompt_installed(models.unet, models.processors):
        installed = models.unet.attn_processors
        assert all(installed[name] is models.processors[name] for name in layers)


def test_animate_with_the_diffusion_backend_writes_videos(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(pictures(size=(16, 16))):
        image.save(folder / f"{i}.png")
    config = MotionPredictorConfig(embed_dim=IMAGE_DIM, hidden_dim=16, num_layers=1, num_heads=2, num_tokens=5,
                                   max_frames=8)
    predictor = SemanticMotionPredictor(config).eval()  # tokens: 2×2 patches + CLS of the tiny encoder
    backend = DiffusionBackend(tiny_video_models(), tiny_clip_encoder(), predictor, config=FAST)
    result = animate(folder, tmp_path / "out", backend=backend, frames=5, fps=4)
    assert result.backend == "animatediff"
    clip = read_video(result.transitions[0])
    assert len(clip) == 5 and clip[0].shape == (16, 16, 3)
    with pytest.raises(InputError, match="more than the motion predictor's 8"):
        animate(folder, tmp_path / "out2", backend=backend, frames=9)


def test_real_loader_on_tiny_snapshots(tmp_path, tokenizer):
    """load_video_models reads the folder layout of the pinned snapshots; here they hold tiny models."""
    from diffusers import MotionAdapter, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from storyd.animate.diffusion import REQUIRED_WEIGHTS, load_video_models

    source = tiny_video_models()
    folders = {name: tmp_path / name for name in REQUIRED_WEIGHTS}
    sd15 = folders["sd15-diffusers"]
    tokenizer.save_pretrained(str(sd15 / "tokenizer"))
    text_config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=CROSS_DIM, intermediate_size=16,
                                 num_hidden_layers=1, num_attention_heads=2, projection_dim=CROSS_DIM)
    CLIPTextModel(text_config).save_pretrained(str(sd15 / "text_encoder"))
    source.vae.save_pretrained(str(sd15 / "vae"))
    source.scheduler.save_pretrained(str(sd15 / "scheduler"))
    # As the hub ships them: an SD1.5-layout UNet, and the motion modules apart.
    UNet2DConditionModel(
        block_out_channels=(8, 16), attention_head_dim=4, layers_per_block=1, sample_size=8, norm_num_groups=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM,
    ).save_pretrained(str(sd15 / "unet"))
    MotionAdapter(
        block_out_channels=(8, 16), motion_layers_per_block=1, motion_norm_num_groups=2, motion_num_attention_heads=2,
        motion_max_seq_length=32,
    ).save_pretrained(str(folders["animatediff-motion-v1-5-3"]))
    source.controlnet.save_pretrained(str(folders["sparsectrl-rgb"]))
    tiny_clip_encoder().model.save_pretrained(str(folders["clip-vit-h-14"]))
    ip_weights = {f"image_proj.{k}": v for k, v in source.image_projection.state_dict().items()}
    for name, index in image_prompt_layers(source.unet).items():
        for key, value in source.processors[name].state_dict().items():
            ip_weights[f"ip_adapter.{index}.{key}"] = value.contiguous()
    (folders["ip-adapter-sd15"] / "models").mkdir(parents=True)
    save_file(ip_weights, str(folders["ip-adapter-sd15"] / "models" / "ip-adapter_sd15.safetensors"))

    models, encoder = load_video_models(folders, device="cpu", dtype=torch.float32)
    assert encoder.embed_dim == IMAGE_DIM and models.controlnet is not None
    assert models.encode_prompt(["a cat", ""]).shape == (2, tokenizer.model_max_length, CROSS_DIM)
    for name, processor in models.processors.items():
        assert torch.equal(processor.to_k_ip.weight, source.processors[name].to_k_ip.weight)
    backend = DiffusionBackend(models, encoder, config=FAST)
    start, end = pictures(size=(16, 16))
    assert len(backend.render(start, end, 5, "a cat")) == 5
