"""Loading: one place that turns a preset into a diffusers pipeline.

Every preset, from the embedded ones to SDXL, yields a diffusers pipeline of the same
classes, so the generator and Consistent Self-Attention run one code path; only the
weights differ. Weights named in weights.lock are checked against their sha256 before
they load, and every loaded tensor must be finite: a flipped byte or a NaN stops here,
not as a black or wrong comic.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from storyd.errors import WeightsError
from storyd.plan.estimate import weights_bytes
from storyd.plan.presets import Preset, local_info
from storyd.render.memory import MemorySettings, apply_memory, choose_memory, free_memory, torch_dtype
from storyd.render.schedulers import SCHEDULERS
from storyd.weights.paths import storyd_home


def load_pipeline(preset: Preset, *, device: str = "cpu", memory=None, weights_dir: Path | None = None,
                  full_verify: bool = False):
    """The preset's diffusers pipeline on `device`, with no network access.

    `memory` (a storyd.render.memory.MemoryPlan) sets dtype, offload and VAE options; by default
    they are chosen from the device's free memory. Locked files are checked against their
    sha256 through the hash cache, or (`full_verify`) re-hashed.
    """
    if memory is None:
        memory = choose_memory(MemorySettings(), device, weights_bytes(preset, 2), free_memory(device))
    home = storyd_home()
    if preset.source == "tiny":
        from storyd.render.tiny_models import build_tiny_pipeline

        pipe = build_tiny_pipeline(preset.family, home)
    elif preset.source == "local":
        pipe = _load_local(preset, home, full_verify)
    else:
        pipe = _load_locked(preset, home, weights_dir, torch_dtype(memory.dtype), full_verify)
    check_finite(pipe, preset.name)
    pipe = apply_memory(pipe, memory, device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_finite(pipe, model: str) -> None:
    """Raise WeightsError if any loaded weight is NaN or infinite (it would draw black or noise)."""
    import torch

    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor_name, tensor in [*component.named_parameters(), *component.named_buffers()]:
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise WeightsError(
                    f"model '{model}': {name}.{tensor_name} holds NaN or infinite values",
                    f"its weight file is damaged: `storyd weights verify {model} --full` names it",
                )


def _load_local(preset: Preset, home: Path, full_verify: bool):
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.weights import load_lock
    from storyd.weights.store import check_folder

    check_folder(load_lock().get(preset.name), preset.local_dir, full=full_verify)

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
    with quiet_loading():
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


@contextlib.contextmanager
def quiet_loading():
    """No "Loading weights" bars from transformers or diffusers: the library never prints."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown[0]:
            transformers_logging.enable_progress_bar()
        if shown[1]:
            diffusers_logging.enable_progress_bar()


def _load_locked(preset: Preset, home: Path, weights_dir: Path | None, dtype, full_verify: bool):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from storyd.weights import load_lock, prepare_config_dir, resolve

    entry = load_lock().get(preset.name)
    location = resolve(entry, weights_dir, full=full_verify)
    checkpoint = location / entry.files[0].path if location.is_dir() else location
    config = prepare_config_dir(entry, home)
    cls = StableDiffusionXLPipeline if preset.family == "sdxl" else StableDiffusionPipeline
    with quiet_loading():
        return cls.from_single_file(str(checkpoint), config=str(config), local_files_only=True, torch_dtype=dtype)
