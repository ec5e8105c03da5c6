"""Fitting the model in memory: dtype, offload and VAE options, chosen from free memory unless set.

diffusers does the work (`enable_model_cpu_offload`, `enable_sequential_cpu_offload`,
VAE tiling and slicing, `torch.compile`); this module decides what to ask for.
"""

from __future__ import annotations

from dataclasses import dataclass

from storyd.errors import InputError

DTYPES = ("auto", "fp32", "fp16", "bf16")
OFFLOADS = ("auto", "none", "model", "sequential")
GB = 1_000_000_000


@dataclass(frozen=True)
class MemorySettings:
    """What the user asked for; `auto` and None mean: decide from the device's free memory."""

    dtype: str = "auto"
    offload: str = "auto"
    vae_tiling: bool | None = None
    vae_slicing: bool | None = None
    compile: bool = False


@dataclass(frozen=True)
class MemoryPlan:
    dtype: str
    offload: str
    vae_tiling: bool
    vae_slicing: bool
    compile: bool
    free_bytes: int | None
    reason: str

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def options(self) -> tuple:
        """What changes the loaded pipeline (not the free memory it was chosen from)."""
        return (self.dtype, self.offload, self.vae_tiling, self.vae_slicing, self.compile)


def free_memory(device: str) -> int | None:
    """Free bytes on the device: the GPU's own memory, or the host's for the CPU; None if unknown."""
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    return None


def choose_memory(settings: MemorySettings, device: str, weights_fp16_bytes: int, free: int | None) -> MemoryPlan:
    """The options for this device. On a GPU: no offload when the fp16 weights fit twice over,
    model offload when they fit, sequential offload below that; VAE tiling and slicing with offload."""
    kind = device.split(":")[0]
    if settings.dtype not in DTYPES:
        raise InputError(f"unknown dtype '{settings.dtype}'", f"use one of: {', '.join(DTYPES)}")
    if settings.offload not in OFFLOADS:
        raise InputError(f"unknown offload '{settings.offload}'", f"use one of: {', '.join(OFFLOADS)}")
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "fp32" if kind == "cpu" else ("bf16" if kind == "cuda" and _bf16_ok() else "fp16")
    if kind == "cpu" and dtype == "fp16":
        raise InputError("fp16 is not supported on the CPU", "use --dtype fp32 or bf16")
    offload, reason = settings.offload, "asked for"
    if kind != "cuda" and offload in ("model", "sequential"):
        raise InputError(
            f"--offload {offload} moves weights between host and GPU memory; there is no GPU here",
            "use --offload none (or auto)",
        )
    if offload == "auto":
        if kind != "cuda" or free is None:
            offload, reason = "none", f"no offload on {kind}"
        elif free >= 2 * weights_fp16_bytes:
            offload, reason = "none", f"{free / GB:.1f} GB free, weights {weights_fp16_bytes / GB:.1f} GB"
        elif free >= weights_fp16_bytes // 2:
            offload, reason = "model", f"only {free / GB:.1f} GB free for {weights_fp16_bytes / GB:.1f} GB of weights"
        else:
            offload, reason = "sequential", f"only {free / GB:.1f} GB free: layer by layer"
    tight = offload != "none"
    return MemoryPlan(
        dtype=dtype,
        offload=offload,
        vae_tiling=tight if settings.vae_tiling is None else settings.vae_tiling,
        vae_slicing=tight if settings.vae_slicing is None else settings.vae_slicing,
        compile=settings.compile,
        free_bytes=free,
        reason=reason,
    )


def _bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def offload_target(device: str) -> tuple[str, int]:
    """(device type, index) that offload hooks move each model to: `cuda:N`'s N, or for a plain
    `cuda` the current device (a launched rank's own, once its launcher set it). diffusers would
    otherwise take GPU 0 for a device without an index, whichever rank asks."""
    import torch

    kind, _, index = device.partition(":")
    if index:
        return kind, int(index)
    return kind, torch.cuda.current_device() if kind == "cuda" else 0


def apply_memory(pipe, plan: MemoryPlan, device: str):
    """Put the pipeline on `device` as the plan says; returns the pipeline."""

    if plan.dtype != "fp32":
        pipe = pipe.to(dtype=torch_dtype(plan.dtype))
    if plan.offload == "model":
        kind, gpu_id = offload_target(device)
        pipe.enable_model_cpu_offload(gpu_id=gpu_id, device=kind)
    elif plan.offload == "sequential":
        kind, gpu_id = offload_target(device)
        pipe.enable_sequential_cpu_offload(gpu_id=gpu_id, device=kind)
    else:
        pipe = pipe.to(device)
    if plan.vae_tiling:
        pipe.vae.enable_tiling()
    if plan.vae_slicing:
        pipe.vae.enable_slicing()
    if plan.compile:
        pipe.unet.compile()
    return pipe
