"""Tiny random-weight video models in the real models' shapes, for tests and the CPU benchmark.

Built from configs with the same classes as the pinned models (UNetMotionModel from a
UNet2DConditionModel plus a MotionAdapter, SparseControlNetModel in SparseCtrl-RGB's
layout, AutoencoderKL, CLIPVisionModelWithProjection), so the real code paths run in
seconds on a CPU. They draw noise; they are not for pictures.
"""

from __future__ import annotations

import torch

from storyd.animate.diffusion import VideoModels
from storyd.animate.encoder import ClipImageEncoder
from storyd.animate.image_prompt import ImagePromptProjection, ImagePromptState, build_image_prompt_processors

CROSS_DIM = 8  # text / image-token width (SD1.5: 768)
IMAGE_DIM = 16  # CLIP projection width (ViT-H/14: 1024)


def tiny_clip_encoder(seed: int = 0) -> ClipImageEncoder:
    with torch.random.fork_rng(devices=[]):  # layer init draws from the default generator; restore it after
        torch.manual_seed(seed)
        return _tiny_clip_encoder()


def tiny_video_models(control: bool = True, seed: int = 0) -> VideoModels:
    """UNetMotionModel + VAE (+ SparseCtrl) + per-frame image prompt; a fixed two-entry table encodes prompts."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _tiny_video_models(control, seed)


def _tiny_clip_encoder() -> ClipImageEncoder:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16,
        patch_size=8, projection_dim=IMAGE_DIM,
    )
    return ClipImageEncoder(CLIPVisionModelWithProjection(config))


def _tiny_video_models(control: bool, seed: int) -> VideoModels:
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        MotionAdapter,
        SparseControlNetModel,
        UNet2DConditionModel,
        UNetMotionModel,
    )

    blocks = dict(block_out_channels=(8, 16), attention_head_dim=4)
    unet2d = UNet2DConditionModel(
        **blocks, layers_per_block=1, sample_size=8, in_channels=4, out_channels=4, norm_num_groups=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM,
    )
    adapter = MotionAdapter(
        block_out_channels=(8, 16), motion_layers_per_block=1, motion_norm_num_groups=2, motion_num_attention_heads=2,
        motion_max_seq_length=32,
    )
    unet = UNetMotionModel.from_unet2d(unet2d, adapter).eval()
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).eval()
    controlnet = None
    if control:  # SparseCtrl-RGB's layout: keyframe latents (4 channels) plus the frame mask, simplified embedding
        controlnet = SparseControlNetModel(
            **blocks, layers_per_block=1, in_channels=4, conditioning_channels=4, norm_num_groups=2,
            down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"), cross_attention_dim=CROSS_DIM,
            conditioning_embedding_out_channels=(8, 8), use_simplified_condition_embedding=True,
            concat_conditioning_mask=True, motion_num_attention_heads=2, motion_max_seq_length=32,
        ).eval()
        # ControlNet starts with zero convolutions: as built it adds nothing, and a test that SparseCtrl
        # carries the keyframes would pass with it switched off. Random weights make it act.
        for layer in [controlnet.controlnet_cond_embedding, *controlnet.controlnet_down_blocks,
                      controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(layer.weight)
    state = ImagePromptState()
    processors = build_image_prompt_processors(unet, state)
    projection = ImagePromptProjection(IMAGE_DIM, CROSS_DIM)
    for processor in processors.values():  # random, not IP-Adapter's near-zero start, so the prompt has an effect
        torch.nn.init.normal_(processor.to_k_ip.weight)
        torch.nn.init.normal_(processor.to_v_ip.weight)
    table = torch.randn(2, 7, CROSS_DIM, generator=torch.Generator().manual_seed(seed + 7))

    def encode_prompt(prompts: list[str]) -> torch.Tensor:
        return torch.stack([table[1 if prompt else 0] for prompt in prompts])  # "" → row 0, anything else → row 1

    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False)
    return VideoModels(unet, vae, scheduler, encode_prompt, projection, state, processors, controlnet)
