"""Write a trained toy model in the diffusers folder layout, and load it back as a pipeline."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

from storyd.fsutil import atomic_write_text
from storyd.toy.model_config import noise_scheduler_config, param_count

SAMPLING = {"width": 64, "height": 64, "steps": 25, "guidance": 4.0, "scheduler": "ddim"}  # storyd scheduler names
# The model's CSA defaults (storyd.plan.presets.model_consistency): it learnt to copy a character
# from a finished reference panel through every self-attention layer (storyd.toy.train), so
# one reference panel, read at its last step with all its tokens, from the first step on, by
# the conditional half only, so that guidance amplifies the copy; the reference drawn at guidance
# 7, more decisively than the panels that copy it at 4 (measured: docs/toy-model.md).
CONSISTENCY = {"id_panels": 1, "layers": "all", "sampling_rate": [1.0], "warmup_steps": 0, "random_skip": False,
               "read_step": "last", "uncond_reads": False, "reference_guidance": 7.0}


def export_model(folder: Path, vae, text_encoder, unet, scaling: float, facts: dict,
                 *, dtype: torch.dtype = torch.float16) -> Path:
    """Save ``unet/``, ``vae/``, ``text_encoder/`` (safetensors, ``dtype``), ``scheduler/`` and ``model.json``."""
    from diffusers import DDIMScheduler

    folder.mkdir(parents=True, exist_ok=True)
    vae = copy.deepcopy(vae)
    vae.register_to_config(scaling_factor=scaling)
    for name, module in (("vae", vae), ("text_encoder", text_encoder), ("unet", unet)):
        copy.deepcopy(module).to(dtype).save_pretrained(folder / name, safe_serialization=True)
    DDIMScheduler(**noise_scheduler_config()).save_pretrained(folder / "scheduler")
    params = {"vae": param_count(vae), "text_encoder": param_count(text_encoder), "unet": param_count(unet)}
    model_json = folder / "model.json"
    existing = json.loads(model_json.read_text()) if model_json.exists() else {}
    info = {**existing, **SAMPLING, "consistency": CONSISTENCY, "weights_dtype": str(dtype).removeprefix("torch."),
            "parameters": params, "training": facts}
    atomic_write_text(model_json, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return folder


def install_model(source: Path, assets: Path) -> None:
    """Copy an exported model into ``assets``, keeping what model.json there says about other parts."""
    for part in ("unet", "vae", "text_encoder", "scheduler"):
        shutil.rmtree(assets / part, ignore_errors=True)
        shutil.copytree(source / part, assets / part)
    old = json.loads((assets / "model.json").read_text()) if (assets / "model.json").exists() else {}
    new = json.loads((source / "model.json").read_text())
    atomic_write_text(assets / "model.json", json.dumps({**old, **new}, indent=2, sort_keys=True) + "\n")
