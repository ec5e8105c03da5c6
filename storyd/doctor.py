"""`storyd doctor`: what this machine has, what storyd would choose on it, which weights are here."""

from __future__ import annotations

import platform

from storyd.plan.estimate import weights_bytes
from storyd.plan.footprint import host_budget
from storyd.plan.presets import PRESETS, default_preset_name
from storyd.render.device import pick_device
from storyd.render.memory import MemorySettings, choose_memory, free_memory


def diagnose(device: str = "auto", model: str = "sdxl", weights_dir=None) -> dict:
    """Device and memory, the dtype and offload storyd would pick for `model`, and every locked model's state."""
    import torch

    from storyd.weights import load_lock, verify

    chosen = pick_device(device)
    free = free_memory(chosen)
    memory = choose_memory(MemorySettings(), chosen, weights_bytes(PRESETS[model], 2), free)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": chosen,
        "device_name": torch.cuda.get_device_name(chosen) if chosen.startswith("cuda") else platform.machine(),
        "free_bytes": free,
        "host_free_bytes": free_memory("cpu"),
        "host_budget_bytes": host_budget(),  # what a run may use by default (--host-memory)
        "model": model,
        "memory": memory.as_dict(),
        "embedded_default": default_preset_name(),
    }
    from storyd.animate.backends.registry import choose_backend, lock_present

    video = choose_backend("auto", None, device=chosen, free_bytes=free if chosen.startswith("cuda") else None,
                           present=lambda names: lock_present(names, weights_dir))
    info["animate"] = {"backend": video.backend, "model": video.model.name if video.model else None,
                       "reason": video.reason}
    lock = load_lock()
    info["weights"] = [
        {"name": r.name, "status": r.status, "path": str(r.path) if r.path else None, "hint": r.hint}
        for r in verify(list(lock.entries.values()), weights_dir)
    ]
    return info
