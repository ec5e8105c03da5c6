"""The architectures of the tiny random-weight presets, as data (no torch): the plan's
estimates read them, `storyd.render.tiny_models` builds from them."""

# UNet configs keep the real models' block layout (attention levels, SDXL's text-time
# embedding, SD2.1's linear projections) at a width that runs in milliseconds.
_SD15_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 32, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
)
UNET_CONFIGS: dict[str, dict] = {
    "sd15": _SD15_UNET,
    # SD2.1: SD1.5's layout with per-level head widths, linear projections and upcast attention
    "sd21": {**_SD15_UNET, "attention_head_dim": (2, 4, 8), "use_linear_projection": True, "upcast_attention": True},
    # SDXL: no attention at the finest level, deeper transformers at the coarsest, text-time embedding
    "sdxl": {
        **_SD15_UNET,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 1, 2),
        "cross_attention_dim": 64,
        "attention_head_dim": (2, 4, 8),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 8 * 6 + 32,
    },
}

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(16, 16, 32),
    layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    norm_num_groups=8,
    sample_size=64,
)

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=32,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
