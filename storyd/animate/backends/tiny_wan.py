"""Tiny random-weight Wan pipelines in the real models' layout, for tests and the CPU benchmark.

The same classes as Wan2.1-FLF2V-14B and VACE-1.3B (WanTransformer3DModel /
WanVACETransformer3DModel, AutoencoderKLWan, UMT5EncoderModel, CLIPVisionModel), built from
small configs with a fixed seed; the tokenizer is a word-level one built in memory, so nothing
is downloaded. They draw noise; they are not for pictures.
"""

from __future__ import annotations

from dataclasses import replace

from storyd.animate.backends.registry import VIDEO_MODELS, NativeSize, VideoModel

TEXT_DIM = 16
Z_DIM = 4
WORDS = "a the and of on in at cat dog girl boy runs walks beach sea sun sky tree house".split()
# 48x32 frames: the latent grid (6x4) splits into the transformer's 2x2 patches; multiple = 8 (VAE) x 2 (patch)
TINY_NATIVE = NativeSize(area=48 * 32, multiple=16, min_aspect=9 / 16, max_aspect=16 / 9)


def tiny_wan_model(name: str) -> VideoModel:
    """The registry's model with the tiny native size, so tests render 48x32 frames."""
    return replace(VIDEO_MODELS[name], native=TINY_NATIVE)


def tiny_wan_pipeline(kind: str, seed: int = 0):
    """A WanImageToVideoPipeline (``flf2v``) or WanVACEPipeline (``vace``) on tiny random weights."""
    import torch

    with torch.random.fork_rng(devices=[]):  # layer init draws from the default generator; restore it after
        torch.manual_seed(seed)
        return _build(kind)


def word_tokenizer(model_max_length: int = 16):
    """A word-level tokenizer over WORDS, built in memory (no download); ids: <pad> 0, </s> 1, <unk> 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=model_max_length)


def _lively(module, gain: float = 2.0) -> None:
    """Redraw every weight with twice the variance-keeping scale.

    At the default init a tiny random VAE averages pictures almost to a constant and the
    transformer barely reacts to its conditioning, so changing a keyframe would change no
    output pixel and the tests that it must would be empty. With this gain it does.
    """
    import math

    import torch

    for layer in module.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)):
            torch.nn.init.normal_(layer.weight, std=gain / math.sqrt(layer.weight[0].numel()))


def _build(kind: str):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(WORDS) + 3, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                   relative_attention_num_buckets=8)
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=Z_DIM, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.0] * Z_DIM, latents_std=[1.0] * Z_DIM,
    ).eval()
    blocks = dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=4, out_channels=Z_DIM, text_dim=TEXT_DIM,
        freq_dim=16, ffn_dim=16, num_layers=2, rope_max_seq_len=32,
    )
    parts = dict(tokenizer=word_tokenizer(), text_encoder=text_encoder, vae=vae,
                 scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    if kind == "flf2v":
        from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
        from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                             image_size=16, patch_size=8)
        ).eval()
        # The noise latents, the 4-channel frame mask and the encoded keyframe video; two images of 2x2+1 tokens.
        transformer = WanTransformer3DModel(**blocks, in_channels=2 * Z_DIM + 4, image_dim=8, pos_embed_seq_len=2 * 5)
        pipe = WanImageToVideoPipeline(
            **parts, image_processor=CLIPImageProcessorPil(crop_size=16, size=16), image_encoder=image_encoder,
            transformer=transformer.eval(),
        )
    else:
        from diffusers import WanVACEPipeline, WanVACETransformer3DModel

        # VACE context: the inactive and reactive video latents plus the mask folded 8x8 into channels.
        transformer = WanVACETransformer3DModel(**blocks, in_channels=Z_DIM, vace_layers=[0],
                                                vace_in_channels=2 * Z_DIM + 64)
        pipe = WanVACEPipeline(**parts, transformer=transformer.eval())
    _lively(pipe.transformer)
    _lively(pipe.vae)
    pipe.set_progress_bar_config(disable=True)
    return pipe
