"""Tiny random-weight AnimateDiff + SparseCtrl + IP-Adapter Plus components, for tests and the CPU benchmark.

The same classes as the pinned models (UNet2DConditionModel joined with a MotionAdapter,
SparseControlNetModel in SparseCtrl-RGB's layout, AutoencoderKL, CLIPTextModel,
CLIPVisionModelWithProjection) and an IP-Adapter Plus state dict in h94/IP-Adapter's key
layout, built from small configs with a fixed seed; the tokenizer is built in memory. They draw
noise; they are not for pictures. :func:`write_tiny_snapshots` lays them out as the lock's
repositories, so the real loader and the weights store run on them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from storyd.animate.backends.registry import VIDEO_MODELS, NativeSize, VideoModel

CROSS_DIM = 8  # text / image-token width (SD1.5: 768)
RESAMPLER_DIM = 64  # IP-Adapter Plus's resampler width; diffusers reads its heads as width // 64
# 32x32 frames: the VAE halves them, the UNet halves the latents once more
TINY_NATIVE = NativeSize(area=32 * 32, multiple=8, min_aspect=2 / 3, max_aspect=3 / 2)
BLOCKS = dict(block_out_channels=(8, 16), attention_head_dim=4)
UNET = dict(
    **BLOCKS, layers_per_block=1, sample_size=8, in_channels=4, out_channels=4, norm_num_groups=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=CROSS_DIM,
)
MOTION = dict(block_out_channels=(8, 16), motion_layers_per_block=1, motion_norm_num_groups=2,
              motion_num_attention_heads=2, motion_max_seq_length=32)


def tiny_animatediff_model() -> VideoModel:
    """The registry's animatediff model with the tiny native size, so tests render 32x32-pixel frames."""
    return replace(VIDEO_MODELS["animatediff-v3"], native=TINY_NATIVE)


def tiny_components(seed: int = 0, tokenizer=None, vocab_size: int | None = None) -> dict:
    """Pipeline components for :func:`storyd.animate.backends.animatediff.assemble_pipeline`.

    ``tokenizer`` (with ``vocab_size``) replaces the in-memory word tokenizer, e.g. by a real CLIP one.
    """
    with torch.random.fork_rng(devices=[]):  # layer init draws from the default generator; restore it after
        torch.manual_seed(seed)
        return _components(tokenizer, vocab_size)


def tiny_image_encoder(seed: int = 0):
    """A CLIP vision model with 2x2 patches + CLS = 5 tokens of width 16 (ViT-H/14: 257 of 1280)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from storyd.animate.encoder import ClipImageEncoder

    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ClipImageEncoder(CLIPVisionModelWithProjection(config).eval())


def tiny_ip_adapter_plus(image_width: int, seed: int = 0, queries: int = 4) -> dict[str, torch.Tensor]:
    """An IP-Adapter Plus for the tiny UNet, in the flat key layout of ``ip-adapter-plus_sd15.safetensors``.

    Weights are drawn wide (not IP-Adapter's small start), so the image prompt visibly changes the frames.
    """
    return ip_adapter_plus_weights(UNET, image_width, RESAMPLER_DIM, queries, seed)


def ip_adapter_plus_weights(unet_config: dict, image_width: int, resampler_dim: int, queries: int,
                            seed: int = 0) -> dict[str, torch.Tensor]:
    """Random IP-Adapter Plus weights for the UNet of ``unet_config`` (its cross-attention width is the
    tokens' width), in ``ip-adapter-plus_sd15.safetensors``' flat key layout; SD1.5's real one has
    ``image_width`` 1280 (CLIP ViT-H), ``resampler_dim`` 768 and 16 ``queries``."""
    from diffusers import UNet2DConditionModel

    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.5) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    d, cross = resampler_dim, unet_config["cross_attention_dim"]
    weights = {
        "image_proj.latents": rand(1, queries, d), "image_proj.proj_in.weight": rand(d, image_width),
        "image_proj.proj_in.bias": rand(d, std=0.1), "image_proj.proj_out.weight": rand(cross, d),
        "image_proj.proj_out.bias": rand(cross, std=0.1), "image_proj.norm_out.weight": torch.ones(cross),
        "image_proj.norm_out.bias": torch.zeros(cross),
    }
    for i in range(4):  # the Plus resampler: 4 blocks of (perceiver attention, feed-forward), heads 64 wide
        layer = f"image_proj.layers.{i}"
        for norm in ("0.norm1", "0.norm2", "1.0"):
            weights[f"{layer}.{norm}.weight"], weights[f"{layer}.{norm}.bias"] = torch.ones(d), torch.zeros(d)
        weights |= {f"{layer}.0.to_q.weight": rand(d, d, std=0.1), f"{layer}.0.to_kv.weight": rand(2 * d, d, std=0.1),
                    f"{layer}.0.to_out.weight": rand(d, d, std=0.1), f"{layer}.1.1.weight": rand(4 * d, d, std=0.1),
                    f"{layer}.1.3.weight": rand(d, 4 * d, std=0.1)}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    key = 1
    for name in unet.attn_processors:  # diffusers numbers the cross-attention layers 1, 3, 5, ...
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
            weights[f"ip_adapter.{key}.to_k_ip.weight"] = rand(hidden, cross, std=1.0)
            weights[f"ip_adapter.{key}.to_v_ip.weight"] = rand(hidden, cross, std=1.0)
            key += 2
    return weights


def tiny_animatediff_backend(seed: int = 0, **settings):
    """An :class:`AnimateDiffBackend` on tiny components; ``settings`` set its fields (steps, scales, ...)."""
    from storyd.animate.backends.animatediff import AnimateDiffBackend, assemble_pipeline, nest_ip_adapter

    encoder = tiny_image_encoder(seed)
    components = {**tiny_components(seed), "image_encoder": encoder.model}
    ip = nest_ip_adapter(tiny_ip_adapter_plus(encoder.hidden_width, seed))
    return AnimateDiffBackend(assemble_pipeline(components, ip), encoder, tiny_animatediff_model(), **settings)


def write_tiny_snapshots(root: Path, seed: int = 0) -> dict[str, Path]:
    """The tiny models in the file layout of each lock entry the animatediff model needs; lock name → its
    folder, or its file for a one-file entry (as the weights store resolves them).

    SD1.5's tokenizer is the real CLIP one (built offline), whose vocab.json and merges.txt the lock lists.
    """
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPTokenizer

    from storyd.render.tokenizer import write_tokenizer_files

    folders = {name: root / name for name in VIDEO_MODELS["animatediff-v3"].weights}
    sd15 = folders["sd15-diffusers"]
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tokenizer_files(sd15 / "tokenizer")), local_files_only=True)
    parts = tiny_components(seed, tokenizer=tokenizer, vocab_size=len(tokenizer))
    encoder = tiny_image_encoder(seed)
    for name in ("vae", "text_encoder", "unet", "scheduler"):
        parts[name].save_pretrained(str(sd15 / name))
    (sd15 / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}) + "\n")
    parts["motion_adapter"].save_pretrained(str(folders["animatediff-motion-v1-5-3"]))
    parts["controlnet"].save_pretrained(str(folders["sparsectrl-rgb"]))
    encoder.model.save_pretrained(str(folders["clip-vit-h-14"]))
    CLIPImageProcessor(size=16, crop_size=16).save_pretrained(str(folders["clip-vit-h-14"]))
    ip_file = folders["ip-adapter-plus-sd15"] / "models" / "ip-adapter-plus_sd15.safetensors"
    ip_file.parent.mkdir(parents=True)
    save_file(tiny_ip_adapter_plus(encoder.hidden_width, seed), str(ip_file))
    return {**folders, "ip-adapter-plus-sd15": ip_file}


def _components(tokenizer, vocab_size: int | None) -> dict:
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        MotionAdapter,
        SparseControlNetModel,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from storyd.animate.backends.tiny_wan import WORDS, word_tokenizer

    if tokenizer is None:
        tokenizer, vocab_size = word_tokenizer(), len(WORDS) + 3
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=CROSS_DIM, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=CROSS_DIM,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )).eval()
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).eval()
    # SparseCtrl-RGB's layout: VAE latents of the keyframes (4 channels) plus the frame mask, simplified embedding
    controlnet = SparseControlNetModel(
        **BLOCKS, layers_per_block=1, in_channels=4, conditioning_channels=4, norm_num_groups=2,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"), cross_attention_dim=CROSS_DIM,
        conditioning_embedding_out_channels=(8, 8), use_simplified_condition_embedding=True,
        concat_conditioning_mask=True, motion_num_attention_heads=2, motion_max_seq_length=32,
    ).eval()
    # ControlNet starts with zero convolutions: as built it would add nothing, and a test that SparseCtrl
    # carries the keyframes would pass with it switched off. Random weights make it act.
    for layer in [controlnet.controlnet_cond_embedding, *controlnet.controlnet_down_blocks,
                  controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(layer.weight)
    return dict(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=UNet2DConditionModel(**UNET).eval(),
        motion_adapter=MotionAdapter(**MOTION).eval(), controlnet=controlnet,
        scheduler=DPMSolverMultistepScheduler(beta_schedule="linear", algorithm_type="dpmsolver++",
                                              use_karras_sigmas=True),
    )
