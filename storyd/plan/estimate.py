"""Rough time and memory estimates for a run, from the model's config alone (no weights).

The bank estimate is exact arithmetic over the UNet's layout; time per step is a
per-family figure (measured here for the embedded models on 2 CPU cores, typical
published figures for real models) and is labelled as rough wherever it is shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from storyd.plan.presets import Preset
from storyd.story.model import ConsistencySettings

CONFIGS = Path(__file__).parent.parent / "configs"

# Parameter counts of the real models (UNet + VAE + text encoders).
PARAMS = {"sd15": 1_066_000_000, "sd21": 1_290_000_000, "sdxl": 3_469_000_000}
# Seconds per denoising step for one image at the preset's own size (guidance on).
STEP_SECONDS = {
    ("sdxl", "cuda"): 0.10,
    ("sd15", "cuda"): 0.04,
    ("sd21", "cuda"): 0.06,
    ("sdxl", "mps"): 1.0,
    ("sd15", "mps"): 0.3,
    ("sd21", "mps"): 0.5,
    ("sdxl", "cpu"): 30.0,
    ("sd15", "cpu"): 4.0,
    ("sd21", "cpu"): 8.0,
}
SMALL_STEP_SECONDS = 0.03  # the embedded models, per image-step on 2 CPU cores


@dataclass(frozen=True)
class Estimate:
    seconds: float
    weights_bytes: int
    bank_bytes_per_character: list[int]
    bank_bytes: int
    device: str

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 1),
            "weights_bytes": self.weights_bytes,
            "bank_bytes": self.bank_bytes,
            "device": self.device,
            "note": "rough: time from typical per-step figures, memory = weights + character banks",
        }


def unet_config(preset: Preset) -> dict | None:
    if preset.source == "tiny":
        from storyd.plan.tiny_configs import UNET_CONFIGS

        return dict(UNET_CONFIGS[preset.family])
    folder = preset.local_dir if preset.source == "local" else CONFIGS / preset.name
    path = folder / "unet" / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def vae_factor(preset: Preset) -> int:
    if preset.source == "lock":
        return 8
    if preset.source == "tiny":
        from storyd.plan.tiny_configs import VAE_CONFIG

        return 2 ** (len(VAE_CONFIG["block_out_channels"]) - 1)
    config = json.loads((preset.local_dir / "vae" / "config.json").read_text())
    return 2 ** (len(config["block_out_channels"]) - 1)


def attention_layout(config: dict) -> list[tuple[str, int, int, int]]:
    """(block, downsampling factor exponent, channels, number of attn1 layers) per attention block."""
    channels = list(config["block_out_channels"])
    n = len(channels)
    per_block = _per_block(config.get("layers_per_block", 2), n)
    depth = _per_block(config.get("transformer_layers_per_block", 1), n)
    layout = []
    for i, kind in enumerate(config["down_block_types"]):
        if "CrossAttn" in kind:
            layout.append(("down", i, channels[i], per_block[i] * depth[i]))
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn":
        layout.append(("mid", n - 1, channels[-1], depth[-1]))
    reverse_depth = config.get("reverse_transformer_layers_per_block") or depth[::-1]
    reverse_depth = _per_block(reverse_depth, n)
    for j, kind in enumerate(config["up_block_types"]):
        if "CrossAttn" in kind:
            layout.append(("up", n - 1 - j, channels[::-1][j], (per_block[::-1][j] + 1) * reverse_depth[j]))
    return layout


def _per_block(value, n: int) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    flat = [v if isinstance(v, int) else max(v) for v in value]
    return flat


def bank_bytes(
    config: dict,
    latent_h: int,
    latent_w: int,
    steps: int,
    settings: ConsistencySettings,
    reference_images: int,
    *,
    cfg: bool,
    dtype_bytes: int,
) -> int:
    """Bytes one character's bank takes: sampled tokens x channels, per patched layer and kept step
    (every step after warm-up, or only the last one when panels read the last step)."""
    layout = attention_layout(config)
    factors = sorted({f for _, f, _, _ in layout}, reverse=True)
    layer_set = settings.layers
    levels = {int(v) for v in layer_set.split(":", 1)[1].split(",")} if layer_set.startswith("levels:") else None
    total = 0
    for block, factor, channels, count in layout:
        level = factors.index(factor)
        if levels is not None and level not in levels:
            continue
        if levels is None and layer_set != "all" and block != layer_set:
            continue
        tokens = (latent_h >> factor) * (latent_w >> factor)
        rate = settings.sampling_rate[min(level, len(settings.sampling_rate) - 1)]
        total += count * round(rate * tokens) * channels
    kept_steps = max(steps - settings.warmup_steps, 0) if settings.read_step == "same" else min(steps, 1)
    return total * kept_steps * reference_images * (2 if cfg else 1) * dtype_bytes


def weights_bytes(preset: Preset, dtype_bytes: int) -> int:
    if preset.source == "lock":
        return PARAMS[preset.family] * dtype_bytes
    if preset.source == "tiny":
        return 4_000_000 * dtype_bytes
    params = sum(_safetensors_params(file) for file in preset.local_dir.rglob("*.safetensors"))
    return params * dtype_bytes


def _safetensors_params(path: Path) -> int:
    """The parameters in a .safetensors file, read from its JSON header (no tensor library is imported)."""
    with path.open("rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def estimate_run(
    preset: Preset,
    *,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    consistency: ConsistencySettings,
    reference_counts: list[int],
    n_panels: int,
    device: str,
    dtype: str = "auto",
) -> Estimate:
    """`dtype` is the run's (storyd.render.memory.DTYPES): banks are kept in it; `auto` is what
    choose_memory picks, fp32 on the CPU and half precision on a GPU."""
    kind = device.split(":")[0]
    dtype_bytes = (4 if kind == "cpu" else 2) if dtype == "auto" else (4 if dtype == "fp32" else 2)
    scale = (width * height) / (preset.width * preset.height)
    per_step = (
        STEP_SECONDS.get((preset.family, kind), SMALL_STEP_SECONDS) if preset.source == "lock" else SMALL_STEP_SECONDS
    )
    seconds = per_step * scale * steps * n_panels * (1.15 if consistency.enabled else 1.0)
    config = unet_config(preset)
    per_character: list[int] = []
    if config is not None and consistency.enabled:
        factor = vae_factor(preset)
        for count in reference_counts:
            per_character.append(
                bank_bytes(
                    config,
                    height // factor,
                    width // factor,
                    steps,
                    consistency,
                    count,
                    cfg=consistency.guidance_for_references(guidance) > 1,
                    dtype_bytes=dtype_bytes,
                )
            )
    return Estimate(seconds, weights_bytes(preset, dtype_bytes), per_character, sum(per_character), device)
