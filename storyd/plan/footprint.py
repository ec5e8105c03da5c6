"""Where a run's memory goes: the character banks' placement, and the peak host and device memory.

The banks rest on the compute device, in host memory, or on disk (`storyd.csa.bank`).
`auto` takes the first of those that keeps the run within its budgets: the device's free
memory (when it is known) and a host budget, by default what the host has free less a
margin. The peaks are as rough as the estimate they come from (`storyd.plan.estimate`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from storyd.errors import InputError
from storyd.plan.estimate import Estimate

GB = 1_000_000_000
RUNTIME_BYTES = 1_500_000_000  # Python, torch and the libraries in host memory, before any weights
HOST_MARGIN = 0.1  # of the free host memory, kept back from the default budget (at least MIN_MARGIN)
MIN_MARGIN = 1_000_000_000
UNET_SHARE = 0.75  # of the weights: the UNet, the largest part model offload keeps on the GPU at once
PLACEMENTS = ("device", "host", "disk")
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
AUTO_REASONS = {
    "device": "auto: they fit in the device's free memory",
    "host": "auto: they fit in the host memory budget",
    "disk": "auto: too large for the budget in memory, they stream from disk a step at a time",
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?)b?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """The memory a run may use: `host_bytes` of host memory, `device_bytes` of the compute device's
    (None: unknown, as when planning without asking the device); `offload` is where the weights live."""

    host_bytes: int
    device_bytes: int | None = None
    offload: str = "none"  # storyd.render.memory.OFFLOADS, resolved


@dataclass(frozen=True)
class Footprint:
    bank: str  # device | host | disk: where the banks rest
    bank_storage: str  # the CharacterBank's storage_device: a torch device, or "disk"
    reason: str
    host_peak: int
    device_peak: int | None  # None: the compute device is the host
    host_budget: int
    device_budget: int | None
    advice: str | None = None  # what to change when the run does not fit

    @property
    def fits(self) -> bool:
        return self.advice is None

    def as_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "fits": self.fits}


def parse_size(text: str) -> int:
    """Bytes from `16GB`, `16G`, `15.5 GiB`, `800MB` or a plain number of bytes (k, M, G and T are
    powers of 1000; with an `i`, of 1024)."""
    match = _SIZE_RE.fullmatch(str(text))
    if not match:
        raise InputError(f"'{text}' is not a memory size", "e.g. 16GB, 15.5GiB or 800MB")
    number, unit, binary = match.groups()
    power = "kmgt".find(unit.lower()) + 1 if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def dtype_bytes(dtype: str, device: str) -> int:
    """The size of a `--dtype` value on `device` (auto: fp32 on the CPU, 16-bit on a GPU), without torch."""
    if dtype not in DTYPE_BYTES and dtype != "auto":
        raise InputError(f"unknown dtype '{dtype}'", f"use one of: auto, {', '.join(DTYPE_BYTES)}")
    if dtype == "fp16" and device.split(":")[0] == "cpu":
        raise InputError("fp16 is not supported on the CPU", "use --dtype fp32 or bf16")  # as storyd comic says
    return DTYPE_BYTES.get(dtype, 4 if device.split(":")[0] == "cpu" else 2)


def host_budget(requested: int | None = None) -> int:
    """`requested`, else the host's free memory (as `storyd doctor` shows it) less a margin."""
    if requested is not None:
        return requested
    import psutil

    free = int(psutil.virtual_memory().available)
    return max(free - max(int(free * HOST_MARGIN), MIN_MARGIN), 0)


def plan_footprint(estimate: Estimate, device: str, requested: str, budget: Budget) -> Footprint:
    """Place the banks as `requested` (a `bank_device` value) and add up the peaks."""
    if requested != "auto":
        return _footprint(estimate, device, _storage(requested, device), budget, f"bank_device {requested}")
    on_host = device.split(":")[0] == "cpu"
    candidates = ([] if on_host or budget.device_bytes is None else [device]) + ["cpu", "disk"]
    for storage in candidates:
        found = _footprint(estimate, device, storage, budget, AUTO_REASONS[_placement(storage)])
        if found.fits:
            return found
    return found  # on disk, however short of the budget: the advice says what to change


def _storage(requested: str, device: str) -> str:
    if requested == "device":
        return device
    return "cpu" if requested == "host" else requested


def _placement(storage: str) -> str:
    return "host" if storage == "cpu" else "disk" if storage == "disk" else "device"


def _footprint(estimate: Estimate, device: str, storage: str, budget: Budget, reason: str) -> Footprint:
    weights, acts, banks, step = (estimate.weights_bytes, estimate.activation_bytes, estimate.bank_bytes,
                                  estimate.bank_step_bytes)
    place = _placement(storage)
    # a disk bank holds two steps in host memory: the one in use (or being written) and the next
    bank_host = {"host": banks, "disk": 2 * step, "device": 0}[place]
    if device.split(":")[0] == "cpu":
        host = RUNTIME_BYTES + weights + acts + (banks if place == "device" else bank_host)
        device_peak = None
    else:
        on_device = {"none": weights, "model": int(weights * UNET_SHARE), "sequential": 0}[budget.offload]
        device_peak = on_device + acts + (banks if place == "device" else step)
        resident = 0 if budget.offload == "none" else weights
        # without offload the weights pass through host memory while they load, before any bank exists
        host = RUNTIME_BYTES + max(weights if budget.offload == "none" else 0, resident + bank_host)
    found = Footprint(place, storage, reason, host, device_peak, budget.host_bytes, budget.device_bytes)
    return _with_advice(found, estimate, device, budget)


def _with_advice(found: Footprint, estimate: Estimate, device: str, budget: Budget) -> Footprint:
    over_device = found.device_peak is not None and budget.device_bytes is not None and (
        found.device_peak > budget.device_bytes)
    advice = []
    if found.host_peak > budget.host_bytes:
        need = f"needs {found.host_peak / GB:.1f} GB of host memory, {budget.host_bytes / GB:.1f} GB allowed"
        if found.bank != "disk" and estimate.bank_bytes > 2 * estimate.bank_step_bytes:
            advice.append(f"{need}: keep the banks on disk (--bank-device disk or auto)")
        elif device.split(":")[0] == "cpu":
            bf16 = " or in bf16 (--dtype bf16)" if estimate.dtype_bytes == 4 else ""
            advice.append(f"{need} (the weights alone are {estimate.weights_bytes / GB:.1f} GB): draw on a GPU "
                          f"(--device cuda){bf16}, at a smaller size, or allow more with --host-memory")
        else:
            advice.append(f"{need}: use less offload (--offload), or allow more with --host-memory")
    if over_device:
        hint = "--bank-device host or disk, " if found.bank == "device" else ""
        advice.append(f"needs {found.device_peak / GB:.1f} GB on {device}, {budget.device_bytes / GB:.1f} GB free: "
                      f"use {hint}--offload model or sequential, or a smaller size")
    return replace(found, advice="; ".join(advice) or None)
