"""The one device policy every command uses: `auto` picks CUDA, then MPS, then the CPU."""

from __future__ import annotations

from storyd.errors import InputError


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
