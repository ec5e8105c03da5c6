"""Model presets and loading: one place that turns a preset name into a diffusers pipeline.

Every preset, from the embedded ones to SDXL, yields a diffusers pipeline of the
same classes, so the generator and Consistent Self-Attention run one code path;
only the weights differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from storyd.errors import InputError
from storyd.schedulers import SCHEDULERS
from storyd.story import ConsistencySettings
from storyd.weights.paths import storyd_home

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # sd15 | sd21 | sdxl: the pipeline class and UNet layout
    source: str  # "tiny": random weights built here; "local": files shipped in the package; "lock": weights.lock
    width: int
    height: int
    steps: int
    guidance: float
    description: str
    art: bool = True  # False: draws noise, and says so

    @property
    def local_dir(self) -> Path:
        return ASSETS / self.name


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("sdxl", "sdxl", "lock", 1024, 1024, 35, 5.0, "Stable Diffusion XL base 1.0 (the default for real work)"),
        Preset("sd15", "sd15", "lock", 512, 512, 35, 7.0, "Stable Diffusion 1.5"),
        Preset(
            "sd21", "sd21", "lock", 768, 768, 35, 7.0, "Stable Diffusion 2.1 (unpinned until its hashes are filled)"
        ),
        Preset("toy", "sd15", "local", 64, 64, 25, 4.0, "a small model storyd trained on a drawn world (embedded)"),
        Preset("tiny", "sd15", "tiny", 64, 64, 4, 5.0, "random weights in SD1.5's shape, for tests", art=False),
        Preset("tiny-sd21", "sd21", "tiny", 64, 64, 4, 5.0, "random weights in SD2.1's shape, for tests", art=False),
        Preset("tiny-sdxl", "sdxl", "tiny", 64, 64, 4, 5.0, "random weights in SDXL's shape, for tests", art=False),
    )
}


def default_preset_name() -> str:
    """The embedded default: the trained toy model where it is shipped, else the random one."""
    return "toy" if (ASSETS / "toy" / "unet").is_dir() else "tiny"


def get_preset(name: str | None) -> Preset:
    name = name or default_preset_name()
    if name not in PRESETS:
        raise InputError(f"unknown model '{name}'", f"use one of: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if preset.source == "local" and not (preset.local_dir / "unet").is_dir():
        raise InputError(
            f"the embedded model '{name}' is not in this checkout", "run `make train-toy`, or use model: tiny"
        )
    return preset


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device '{requested}' is not available here", "use --device cpu, or auto")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise InputError("device 'mps' is not available here", "use --device cpu, or auto")
        if requested.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise InputError(f"unknown device '{requested}'", "use auto, cpu, cuda, cuda:N or mps")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def scheduler_name(preset: Preset) -> str:
    """What scheduler `load_pipeline` gives this preset (a storyd name, or the config's class), without loading it."""
    import json

    if preset.source == "tiny":
        return "DDIMScheduler"
    folder = preset.local_dir if preset.source == "local" else Path(__file__).parent / "configs" / preset.name
    override = _local_info(preset).get("scheduler") if preset.source == "local" else None
    if override in SCHEDULERS:
        return override
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"]


def _local_info(preset: Preset) -> dict:
    import json

    path = preset.local_dir / "model.json"
    return json.loads(path.read_text()) if path.exists() else {}


def model_consistency(preset: Preset) -> ConsistencySettings:
    """The model's own CSA settings: the published ones, with what its model.json changes
    (the toy model's differ: see the README)."""
    values = _local_info(preset).get("consistency", {}) if preset.source == "local" else {}
    return dataclasses.replace(ConsistencySettings(), **{k: tuple(v) if isinstance(v, list) else v
                                                         for k, v in values.items()})


def model_revision(preset: Preset) -> str:
    """What pins the weights: the locked commit, a hash of the shipped files, or the build seed."""
    if preset.source == "tiny":
        return "random-seed-0"
    if preset.source == "local":
        import hashlib

        digest = hashlib.sha256()
        for file in sorted(preset.local_dir.rglob("*.safetensors")):
            digest.update(file.read_bytes())
        return "sha256:" + digest.hexdigest()[:16]
    from storyd.weights import load_lock

    return load_lock().get(preset.name).revision or "unpinned"


def load_pipeline(preset: Preset, *, device: str = "cpu", memory=None, weights_dir: Path | None = None):
    """The preset's diffusers pipeline on `device`, with no network access.

    `memory` (a storyd.memory.MemoryPlan) sets dtype, offload and VAE options; by default
    they are chosen from the device's free memory.
    """
    from storyd.memory import MemorySettings, apply_memory, choose_memory, free_memory, torch_dtype

    if memory is None:
        from storyd.estimate import weights_bytes

        memory = choose_memory(MemorySettings(), device, weights_bytes(preset, 2), free_memory(device))
    home = storyd_home()
    if preset.source == "tiny":
        from storyd.tiny_models import build_tiny_pipeline

        pipe = build_tiny_pipeline(preset.family, home)
    elif preset.source == "local":
        pipe = _load_local(preset, home)
    else:
        pipe = _load_locked(preset, home, weights_dir, torch_dtype(memory.dtype))
    pipe = apply_memory(pipe, memory, device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_local(preset: Preset, home: Path):
    from storyd.tokenizer import load_clip_tokenizer

    scheduler = _local_info(preset).get("scheduler")
    return load_folder_pipeline(
        preset.local_dir, load_clip_tokenizer(home), scheduler if scheduler in SCHEDULERS else None
    )


def load_folder_pipeline(folder: Path, tokenizer, scheduler: str | None = None):
    """An SD1.5-layout pipeline from a folder of `vae/`, `text_encoder/`, `unet/`, `scheduler/`
    (the embedded toy model, or a freshly trained one), in fp32."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from storyd.schedulers import scheduler_from_folder

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
