"""The toy model's video stage: the animatediff backend's code on the toy UNet, with a learned motion stage.

The same three pieces as AnimateDiff v3 with SparseCtrl-RGB and IP-Adapter Plus on SD1.5, sized
for the toy UNet (64/96/96 channels, 16x16 latents): a diffusers ``MotionAdapter`` whose motion
modules go into every block, a ``SparseControlNetModel`` copied from the toy UNet (the
keyframes' VAE latents plus the frame mask, SparseCtrl-RGB's layout), and an IP-Adapter Plus
(a resampler and ``to_k_ip``/``to_v_ip`` in every cross-attention layer) reading the toy image
encoder's tokens. They join the frozen toy UNet, VAE and text encoder through
:func:`storyd.animate.backends.animatediff.assemble_pipeline`, the path SD1.5 takes.

One difference: the toy IP-Adapter reads the image encoder's output tokens (``encode``, the
projected space), not its penultimate layer, because those are what the shipped Semantic Motion
Predictor was trained to predict (:mod:`storyd.toy.motion_train`); both are 65 tokens of 64.
The toy stage draws without a text prompt (it was trained with the empty one) and without
classifier-free guidance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from storyd.animate.backends.animatediff import AnimateDiffBackend
from storyd.animate.backends.registry import VIDEO_MODELS, VideoModel
from storyd.toy.image_encoder import ASSETS

VIDEO_DIR = ASSETS / "video"
STAGE_FILE = "stage.safetensors"  # the trained parameters: motion modules, SparseCtrl, IP-Adapter
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class StageConfig:
    """The shapes of the learned parts (the toy UNet's own shapes come from its config)."""

    motion_heads: int = 4
    motion_max_frames: int = 32  # the motion modules' position table
    ip_queries: int = 8  # IP-Adapter Plus resampler queries (SD1.5's: 16)
    resampler_width: int = 64  # diffusers reads the resampler's heads as width // 64

    @classmethod
    def read(cls, folder: Path) -> StageConfig:
        return cls(**json.loads((Path(folder) / CONFIG_FILE).read_text()))


class ProjectedTokens:
    """The toy image encoder seen through ``hidden_tokens``: its projected output tokens (see the module doc)."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.model = encoder.model

    @torch.no_grad()
    def hidden_tokens(self, images=None) -> torch.Tensor:
        if images is not None:
            return self.encoder.encode(images)
        from storyd.animate.encoder import projected_tokens

        size = self.encoder.image_size
        pixels = torch.zeros(1, 3, size, size, device=self.encoder.device, dtype=self.encoder.dtype)
        return projected_tokens(self.model, pixels)


@dataclass
class ToyVideoBackend(AnimateDiffBackend):
    """The animatediff backend on the toy stage: no guidance, 8 steps of the toy DDIM schedule, starting
    noise at temperature 0.3 (chosen on the tuning seeds). It was trained on the empty prompt; the
    frozen toy UNet reads a prompt in the toy world's words."""

    steps: int = 8
    guidance_scale: float = 1.0
    noise_temperature: float = 0.3


def toy_video_model() -> VideoModel:
    """The registry's ``toy-video`` entry."""
    return VIDEO_MODELS["toy-video"]


def load_toy_parts(dtype: torch.dtype = torch.float32) -> dict:
    """The frozen toy model's vae, text_encoder, unet and scheduler, from storyd/assets/toy."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from storyd.render.pipelines import quiet_loading

    load = dict(torch_dtype=dtype, local_files_only=True)
    with quiet_loading():
        return dict(
            vae=AutoencoderKL.from_pretrained(ASSETS / "vae", **load).eval(),
            text_encoder=CLIPTextModel.from_pretrained(ASSETS / "text_encoder", **load).eval(),
            unet=UNet2DConditionModel.from_pretrained(ASSETS / "unet", **load).eval(),
            scheduler=DDIMScheduler.from_pretrained(ASSETS / "scheduler"),
        )


def new_stage_parts(unet, image_width: int, config: StageConfig, seed: int) -> dict:
    """A fresh MotionAdapter, SparseCtrl (its blocks copied from ``unet``) and IP-Adapter Plus state dict.

    As IP-Adapter is initialised, each ``to_k_ip``/``to_v_ip`` starts as a copy of its layer's
    text ``to_k``/``to_v``; the resampler starts small and random; SparseCtrl's zero
    convolutions add nothing at first, so the stage starts as the still model.
    """
    from diffusers import MotionAdapter, SparseControlNetModel

    cfg = unet.config
    with torch.random.fork_rng(devices=[]):  # layer init draws from the default generator
        torch.manual_seed(seed)
        adapter = MotionAdapter(
            block_out_channels=tuple(cfg.block_out_channels), motion_layers_per_block=cfg.layers_per_block,
            motion_num_attention_heads=config.motion_heads, motion_norm_num_groups=cfg.norm_num_groups,
            motion_max_seq_length=config.motion_max_frames,
        )
        down = tuple("CrossAttnDownBlockMotion" if "CrossAttn" in t else "DownBlockMotion"
                     for t in cfg.down_block_types)
        controlnet = SparseControlNetModel(
            in_channels=cfg.in_channels, conditioning_channels=cfg.in_channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block, down_block_types=down, cross_attention_dim=cfg.cross_attention_dim,
            attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups,
            use_simplified_condition_embedding=True, concat_conditioning_mask=True,
            motion_num_attention_heads=config.motion_heads, motion_max_seq_length=config.motion_max_frames,
        )
    for part in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block"):
        getattr(controlnet, part).load_state_dict(getattr(unet, part).state_dict(), strict=False)
    return {"motion_adapter": adapter.eval(), "controlnet": controlnet.eval(),
            "ip_adapter": _ip_adapter_init(unet, image_width, config, seed)}


def _ip_adapter_init(unet, image_width: int, config: StageConfig, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """An IP-Adapter Plus state dict in h94/IP-Adapter's layout, nested as ``load_ip_adapter`` takes it."""
    g = torch.Generator().manual_seed(seed)
    d, out = config.resampler_width, unet.config.cross_attention_dim

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * shape[-1] ** -0.5

    proj = {"latents": rand(1, config.ip_queries, d) * d**0.5 * 0.1, "proj_in.weight": rand(d, image_width),
            "proj_in.bias": torch.zeros(d), "proj_out.weight": rand(out, d), "proj_out.bias": torch.zeros(out),
            "norm_out.weight": torch.ones(out), "norm_out.bias": torch.zeros(out)}
    for i in range(4):  # the Plus resampler's 4 blocks of (perceiver attention, feed-forward)
        for norm in ("0.norm1", "0.norm2", "1.0"):
            proj[f"layers.{i}.{norm}.weight"], proj[f"layers.{i}.{norm}.bias"] = torch.ones(d), torch.zeros(d)
        proj |= {f"layers.{i}.0.to_q.weight": rand(d, d), f"layers.{i}.0.to_kv.weight": rand(2 * d, d),
                 f"layers.{i}.0.to_out.weight": rand(d, d) * 0.1, f"layers.{i}.1.1.weight": rand(4 * d, d),
                 f"layers.{i}.1.3.weight": rand(d, 4 * d) * 0.1}
    layers, key = {}, 1
    for name in unet.attn_processors:  # diffusers numbers the cross-attention layers 1, 3, 5, ...
        if name.endswith("attn2.processor"):
            attn = unet.get_submodule(name.removesuffix(".processor"))
            layers[f"{key}.to_k_ip.weight"] = attn.to_k.weight.detach().clone()
            layers[f"{key}.to_v_ip.weight"] = attn.to_v.weight.detach().clone()
            key += 2
    return {"image_proj": proj, "ip_adapter": layers}


def build_stage_pipeline(tokenizer, image_width: int, config: StageConfig = StageConfig(), seed: int = 0,
                         parts: dict | None = None):
    """The toy stage as an animatediff pipeline, its learned parts fresh from ``seed``."""
    from storyd.animate.backends.animatediff import assemble_pipeline

    parts = parts or load_toy_parts()
    stage = new_stage_parts(parts["unet"], image_width, config, seed)
    ip = stage.pop("ip_adapter")
    return assemble_pipeline({**parts, **stage, "tokenizer": tokenizer, "image_encoder": None}, ip)


def trainable(pipe) -> dict[str, torch.nn.Parameter]:
    """The learned parameters by name (``unet.`` or ``controlnet.`` first): motion modules, SparseCtrl, IP-Adapter."""
    named = {f"controlnet.{k}": p for k, p in pipe.controlnet.named_parameters()}
    for k, p in pipe.unet.named_parameters():
        if "motion_modules" in k or is_image_prompt(k):
            named[f"unet.{k}"] = p
    return named


def is_image_prompt(name: str) -> bool:
    """Whether UNet parameter ``name`` is IP-Adapter's (its resampler, ``encoder_hid_proj``, or ``to_k/v_ip``)."""
    return "encoder_hid_proj" in name or "_ip." in name


def freeze_all_but_stage(pipe) -> dict[str, torch.nn.Parameter]:
    for module in (pipe.unet, pipe.controlnet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    named = trainable(pipe)
    for p in named.values():
        p.requires_grad_(True)
    return named


def save_stage(folder: Path, pipe, config: StageConfig, facts: dict | None = None) -> None:
    """The learned parameters (float16) and the stage config into ``folder``."""
    from safetensors.torch import save_file

    from storyd.fsutil import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: p.detach().to(torch.float16).contiguous() for k, p in trainable(pipe).items()}
    tmp = folder / (STAGE_FILE + ".tmp")
    save_file(tensors, str(tmp))
    atomic_write_bytes(folder / STAGE_FILE, tmp.read_bytes())
    tmp.unlink()
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config.__dict__, indent=2, sort_keys=True) + "\n")
    if facts is not None:
        atomic_write_text(folder / "training.json", json.dumps(facts, indent=2, sort_keys=True) + "\n")


def load_stage_into(pipe, folder: Path) -> None:
    """Load ``folder``'s learned parameters into ``pipe``; every learned parameter must be there."""
    from safetensors.torch import load_file

    from storyd.errors import WeightsError

    saved = load_file(str(Path(folder) / STAGE_FILE))
    named = trainable(pipe)
    if set(saved) != set(named):
        missing, unknown = len(set(named) - set(saved)), len(set(saved) - set(named))
        raise WeightsError(f"{folder / STAGE_FILE} does not fit the toy video stage "
                           f"({missing} parameters missing, {unknown} unknown)",
                           "retrain it with `python -m storyd.toy.video_train`, or restore the shipped one")
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(saved[k].to(p.dtype))


def load_toy_video_backend(*, folder: Path | None = None, seed: int = 0, fit: str = "letterbox",
                           motion_weights: Path | None = None, note=None, **settings) -> ToyVideoBackend:
    """The shipped toy stage as a backend, on the CPU; ``motion_weights`` None: the shipped toy SMP."""
    from storyd.animate.motion import load_predictor
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.toy.image_encoder import load_image_encoder
    from storyd.toy.motion_train import shipped_motion_weights
    from storyd.weights.paths import storyd_home

    folder = Path(folder or VIDEO_DIR)
    config = StageConfig.read(folder)
    encoder = load_image_encoder()
    pipe = build_stage_pipeline(load_clip_tokenizer(storyd_home()), encoder.embed_dim, config)
    load_stage_into(pipe, folder)
    predictor = load_predictor(motion_weights or shipped_motion_weights())[0]
    if note is not None:
        note("toy-video: the toy model's motion stage on the CPU (8 steps, no guidance)")
    return ToyVideoBackend(pipe, ProjectedTokens(encoder), replace(toy_video_model()), predictor, fit=fit, seed=seed,
                           **settings)


def main() -> None:
    """``python -m storyd.toy.video_stage COMIC_DIR PNG [PAIR]``: every other frame of the comic's transition
    PAIR (1: panels 1 to 2) on the toy stage, prompted as `storyd animate` prompts it, side by side in one
    PNG (the README's strip)."""
    import sys

    import numpy as np
    from PIL import Image

    from storyd.animate.frames import load_keyframes, transition_prompt

    args = sys.argv[1:]
    keyframes = load_keyframes(Path(args[0]))
    pair = int(args[2]) if len(args) > 2 else 1
    start, end = keyframes[pair - 1], keyframes[pair]
    frames = load_toy_video_backend().render(start.image, end.image, 16, transition_prompt(start, end))
    strip = np.concatenate([*frames[:-1:2], frames[-1]], axis=1)
    Image.fromarray(strip).save(args[1])


if __name__ == "__main__":
    main()
