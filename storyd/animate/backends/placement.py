"""Where a loaded video pipeline lives: all on the GPU, or offloaded model by model or layer by layer."""

from __future__ import annotations

MODES = ("none", "model", "group")


def place_pipeline(pipe, mode: str, device: str) -> None:
    """Put ``pipe`` on ``device`` in memory mode ``mode`` (see :func:`storyd.animate.backends.registry.memory_mode`).

    none: everything on the device; model: diffusers' model CPU offload; group: group offload, layer by
    layer with CUDA streams. VAE tiling is on with either offload. The progress bar is switched off.
    """
    import torch

    if mode == "none":
        pipe.to(device)
    elif mode == "model":
        from storyd.render.memory import offload_target

        kind, gpu_id = offload_target(device)  # this rank's own GPU, not always cuda:0
        pipe.enable_model_cpu_offload(gpu_id=gpu_id, device=kind)
    else:
        pipe.enable_group_offload(onload_device=torch.device(device), offload_type="leaf_level", use_stream=True)
    if mode != "none":
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
