"""Model presets: what each model name means (family, size, steps, guidance, where its weights come from).

No torch here: a plan is made from presets alone, and `storyd.render.pipelines` loads them.
Every preset, from the embedded ones to SDXL, yields a diffusers pipeline of the same
classes, so the generator and Consistent Self-Attention run one code path; only the
weights differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storyd.errors import InputError, SettingError
from storyd.render.schedulers import SCHEDULERS
from storyd.story.model import ConsistencySettings

ASSETS = Path(__file__).parent.parent / "assets"


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
    if preset.source == "local":  # a missing or truncated file is named here, not met as a traceback later
        from storyd.weights.lock import load_lock
        from storyd.weights.store import check_folder

        check_folder(load_lock().get(name), preset.local_dir, hashes=False)
    return preset


def scheduler_name(preset: Preset) -> str:
    """What scheduler `load_pipeline` gives this preset (a storyd name, or the config's class), without loading it."""
    import json

    if preset.source == "tiny":
        return "DDIMScheduler"
    folder = preset.local_dir if preset.source == "local" else Path(__file__).parent.parent / "configs" / preset.name
    override = local_info(preset).get("scheduler") if preset.source == "local" else None
    if override in SCHEDULERS:
        return override
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"]


def local_info(preset: Preset) -> dict:
    import json

    path = preset.local_dir / "model.json"
    return json.loads(path.read_text()) if path.exists() else {}


def model_consistency(preset: Preset) -> ConsistencySettings:
    """The model's own CSA settings: the published ones, with what its model.json changes
    (the toy model's differ: see docs/toy-model.md)."""
    values = local_info(preset).get("consistency", {}) if preset.source == "local" else {}
    try:
        return ConsistencySettings(**values)
    except (SettingError, TypeError) as exc:
        raise InputError(f"the model's CSA settings are broken: {exc}", "reinstall the model",
                         path=preset.local_dir / "model.json") from None


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
