"""Reading DreamSim's LoRA adapter (a peft adapter folder) as weight updates for the DINO blocks.

peft saves ``adapter_config.json`` and ``adapter_model.safetensors`` (``adapter_model.bin``
before peft 0.6). Each adapted linear layer ``W`` has ``lora_A`` (r x in) and ``lora_B``
(out x r); peft computes ``W x + s * B A x`` with ``s = lora_alpha / r`` (``/ sqrt(r)``
with rsLoRA), so merging is ``W + s * B @ A``. Keys carry the wrapped model's path, for
DreamSim ``base_model.model.extractor_list.0.model.blocks.N.attn.qkv.lora_A.weight``;
only the part from ``blocks.`` on is used. With ``bias`` other than "none" peft also
saves the layer's trained bias, which replaces the original.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from storyd.errors import WeightsError

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODULES = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")  # the DINO block layers a LoRA may adapt
_KEY = re.compile(
    r"^(?P<prefix>(?:.*\.)?)blocks\.(?P<block>\d+)\.(?P<module>" + "|".join(re.escape(m) for m in MODULES) + r")\."
    r"(?:(?P<lora>lora_[AB])(?:\.[\w-]+)?\.weight|(?P<bias>bias))$"
)
_FIX = "the adapter is not DreamSim's dino_vitb16 LoRA: check the archive (storyd weights pull dreamsim)"


@dataclass(frozen=True)
class LoraUpdate:
    deltas: dict  # "blocks.N.attn.qkv.weight" -> tensor to add
    biases: dict  # "blocks.N.attn.qkv.bias" -> tensor that replaces the bias
    scaling: float
    rank: int


def _bad(folder: Path, message: str) -> WeightsError:
    return WeightsError(f"LoRA adapter {folder.name}: {message}", _FIX)


def _scaling(config: dict, folder: Path) -> tuple[float, int]:
    if config.get("peft_type", "LORA") != "LORA":
        raise _bad(folder, f"peft_type is {config.get('peft_type')!r}, not LORA")
    for key in ("use_dora", "fan_in_fan_out", "lora_bias", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise _bad(folder, f"'{key}' is set, which storyd does not merge")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or rank <= 0 or not isinstance(alpha, (int, float)):
        raise _bad(folder, f"r={rank!r} and lora_alpha={alpha!r} are not a rank and a number")
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank), rank


def _load_tensors(folder: Path) -> dict:
    for name in WEIGHTS:
        path = folder / name
        if path.is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            import torch

            return torch.load(path, map_location="cpu", weights_only=True)
    raise _bad(folder, f"has neither {' nor '.join(WEIGHTS)}")


def read_adapter(folder: Path) -> LoraUpdate:
    """The adapter's updates keyed by DINO parameter names, ready to merge."""
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _bad(folder, f"{CONFIG} is missing or not JSON ({exc})") from exc
    scaling, rank = _scaling(config, folder)
    pairs: dict[str, dict[str, object]] = {}
    biases: dict[str, object] = {}
    prefixes = set()
    for key, tensor in _load_tensors(folder).items():
        match = _KEY.match(key)
        if match is None:
            raise _bad(folder, f"holds '{key}', which is not a LoRA of a DINO block's {', '.join(MODULES)}")
        prefixes.add(match["prefix"])
        layer = f"blocks.{match['block']}.{match['module']}"
        if match["bias"]:
            biases[f"{layer}.bias"] = tensor.float()
        else:
            pairs.setdefault(layer, {})[match["lora"]] = tensor.float()
    if len(prefixes) > 1:
        raise _bad(folder, f"adapts more than one backbone ({', '.join(sorted(prefixes))}); "
                           "storyd converts the single-branch model only")
    deltas = {}
    for layer, parts in sorted(pairs.items()):
        if set(parts) != {"lora_A", "lora_B"}:
            raise _bad(folder, f"{layer} has {', '.join(sorted(parts))} but needs lora_A and lora_B")
        a, b = parts["lora_A"], parts["lora_B"]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise _bad(folder, f"{layer} has rank {a.shape[0]}, {CONFIG} says r={rank}")
        deltas[f"{layer}.weight"] = scaling * (b.double() @ a.double())
    if not deltas:
        raise _bad(folder, "holds no LoRA weights")
    return LoraUpdate(deltas, biases, scaling, rank)
