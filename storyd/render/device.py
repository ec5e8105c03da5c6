"""The one device policy every command uses: `auto` picks CUDA, then MPS, then the CPU."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from storyd.errors import InputError


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device '{requested}' is not available here", "use --device cpu, or auto")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise InputError("device 'mps' is not available here", "use --device cpu, or auto")
        return _known(requested)
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def planned_device(requested: str = "auto") -> str:
    """The device a plan is estimated for, guessed without importing torch (which costs seconds).

    `auto` reads CUDA from a loaded NVIDIA driver and MPS from Apple silicon; `pick_device`
    checks the real availability when a model is about to load.
    """
    if requested != "auto":
        return _known(requested)
    if Path("/proc/driver/nvidia/version").exists():
        return "cuda"
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps"
    return "cpu"


def _known(requested: str) -> str:
    if requested.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device '{requested}'", "use auto, cpu, cuda, cuda:N or mps")
    return requested
