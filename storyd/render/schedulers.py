"""Schedulers by name, built from a model's own scheduler config (configs are data)."""

from __future__ import annotations

from pathlib import Path

from storyd.errors import InputError

# storyd name -> (diffusers class, config changes)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def check_scheduler(name: str) -> str:
    if name not in SCHEDULERS:
        raise InputError(f"unknown scheduler '{name}'", f"use one of: {', '.join(SCHEDULERS)}")
    return name


def make_scheduler(name: str, config):
    """A scheduler of kind `name` built from another scheduler's config."""
    import diffusers

    cls, changes = SCHEDULERS[check_scheduler(name)]
    if dict(config).get("rescale_betas_zero_snr") and not _zero_snr(cls):
        able = ", ".join(n for n, (c, _) in SCHEDULERS.items() if _zero_snr(c))
        raise InputError(f"scheduler '{name}' cannot run this model: it was trained with a zero-terminal-SNR "
                         "schedule, which that scheduler does not implement", f"use one of: {able}")
    return getattr(diffusers, cls).from_config({**dict(config), **changes})


def _zero_snr(cls: str) -> bool:
    import inspect

    import diffusers

    return "rescale_betas_zero_snr" in inspect.signature(getattr(diffusers, cls)).parameters


def scheduler_from_folder(folder: Path, name: str | None = None):
    import diffusers

    config = diffusers.DDIMScheduler.load_config(folder)
    if name:
        return make_scheduler(name.lower(), config)
    return getattr(diffusers, config.get("_class_name", "DDIMScheduler")).from_config(config)
