"""Loading: one place that turns a preset into a diffusers pipeline.

Every preset, from the embedded ones to SDXL, yields a diffusers pipeline of the same
classes, so the generator and Consistent Self-Attention run one code path; only the
weights differ.
"""

from __future__ import annotations

from pathlib import Path

from storyd.plan.estimate import weights_bytes
from storyd.plan.presets import Preset, local_info
from storyd.render.memory import MemorySettings, apply_memory, choose_memory, free_memory, torch_dtype
from storyd.render.schedulers import SCHEDULERS
from storyd.weights.paths import storyd_home


def load_pipeline(preset: Preset, *, device: str = "cpu", memory=None, weights_dir: Path | None = None):
    """The preset's diffusers pipeline on `device`, with no network access.

    `memory` (a storyd.render.memory.MemoryPlan) sets dtype, offload and VAE options; by default
    they are chosen from the device's free memory.
    """
    if memory is None:
        memory = choose_memory(MemorySettings(), device, weights_bytes(preset, 2), free_memory(device))
    home = storyd_home()
    if preset.source == "tiny":
        from storyd.render.tiny_models import build_tiny_pipeline

        pipe = build_tiny_pipeline(preset.family, home)
    elif preset.source == "local":
        pipe = _load_local(preset, home)
    else:
        pipe = _load_locked(preset, home, weights_dir, torch_dtype(memory.dtype))
    pipe = apply_memory(pipe, memory, device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_local(preset: Preset, home: Path):
    from storyd.render.tokenizer import load_clip_tokenizer

    scheduler = local_info(preset).get("scheduler")
    return load_folder_pipeline(
        preset.local_dir, load_clip_tokenizer(home), scheduler if scheduler in SCHEDULERS else None
    )


def load_folder_pipeline(folder: Path, tokenizer, scheduler: str | None = None):
    """An SD1.5-layout pipeline from a folder of `vae/`, `text_encoder/`, `unet/`, `scheduler/`
    (the embedded toy model, or a freshly trained one), in fp32."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from storyd.render.schedulers import scheduler_from_folder

    load = dict(torch_dtype=torch.float32, local_files_only=True)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae", **load),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", **load),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel.from_pretrained(folder / "unet", **load),
        scheduler=scheduler_from_folder(folder / "scheduler", scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_locked(preset: Preset, home: Path, weights_dir: Path | None, dtype):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from storyd.weights import load_lock, prepare_config_dir, resolve

    entry = load_lock().get(preset.name)
    location = resolve(entry, weights_dir)
    checkpoint = location / entry.files[0].path if location.is_dir() else location
    config = prepare_config_dir(entry, home)
    cls = StableDiffusionXLPipeline if preset.family == "sdxl" else StableDiffusionPipeline
    return cls.from_single_file(str(checkpoint), config=str(config), local_files_only=True, torch_dtype=dtype)
