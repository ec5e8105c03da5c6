"""DreamSim's ``dino_vitb16`` release -> a transformers ViTModel folder with the LoRA merged.

The release zip (``dreamsim_dino_vitb16_checkpoint.zip``, dreamsim 0.2.x) unpacks to
``dino_vitb16_pretrain.pth`` and ``dino_vitb16_single_lora/`` (a peft adapter; see
dreamsim_lora.py); both are looked for anywhere in the unpacked tree. The .pth is a DINO
training checkpoint: DreamSim itself reads only the projection head from its
``student`` part and takes the backbone from torch.hub's ``dino_vitb16``, DINO's
released backbone, which is the ``teacher`` network of the same run. So the backbone is
taken from ``teacher`` (keys ``backbone.*``), else from ``student``
(``module.backbone.*``), else from a plain backbone state dict; conversion.json
records which. The number of heads is not in the weights: DINO's ViTs use 64-wide heads.

DINO's ``blocks.N.attn.qkv`` (3D x D, rows q | k | v, heads in order) splits into
ViT's query, key and value; LayerNorm eps is DINO's 1e-6. Written with the long-standing
transformers key names, which every version loads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from storyd.errors import WeightsError
from storyd.eval.dreamsim_lora import CONFIG as ADAPTER_CONFIG
from storyd.eval.dreamsim_lora import LoraUpdate, read_adapter

CHECKPOINT = "dino_vitb16_pretrain.pth"
ADAPTER_DIR = "dino_vitb16_single_lora"
HEAD_DIM = 64
LAYER_NORM_EPS = 1e-6
_FIX = "the archive is not DreamSim's dino_vitb16 release: check the dreamsim entry of weights.lock"
_BLOCK = {  # DINO name in a block -> ViT name in encoder.layer.N (qkv is split apart)
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


def _find(source: Path, name: str, *, folder: bool) -> Path:
    hits = sorted(p for p in source.rglob(name)
                  if (p.is_dir() if folder else p.is_file()) and "__MACOSX" not in p.parts)
    if len(hits) != 1:
        found = "none" if not hits else ", ".join(str(h.relative_to(source)) for h in hits)
        raise WeightsError(f"expected one {name} in the unpacked archive, found {found}", _FIX)
    return hits[0]


def load_backbone(path: Path) -> tuple[dict, str]:
    """The DINO ViT state dict in ``path`` (names as in DINO's VisionTransformer) and where it came from."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a safe checkpoint
        raise WeightsError(f"could not read {path.name}: {exc}", _FIX) from exc
    origin, state = "state_dict", data
    for key in ("teacher", "student"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            origin, state = key, data[key]
            break
    if not isinstance(state, dict):
        raise WeightsError(f"{path.name} holds no state dict", _FIX)
    backbone = {}
    for key, tensor in state.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        if not key.startswith("head."):
            backbone[key] = tensor.float()
    return backbone, origin


def merge(backbone: dict, lora: LoraUpdate) -> dict:
    """``backbone`` with the LoRA's updates added (and its trained biases, if any, in place)."""
    merged = dict(backbone)
    for key, value in {**lora.deltas, **lora.biases}.items():
        if key not in merged or merged[key].shape != value.shape:
            raise WeightsError(f"the LoRA adapts {key}, which the DINO checkpoint does not have in that shape", _FIX)
        merged[key] = (merged[key].double() + value).float() if key in lora.deltas else value.float()
    return merged


def vit_config(dino: dict) -> dict:
    """The ViTConfig fields of a DINO ViT, from its tensor shapes."""
    try:
        width = dino["cls_token"].shape[-1]
        patch = dino["patch_embed.proj.weight"].shape[-1]
        patches = dino["pos_embed"].shape[1] - 1
        mlp = dino["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise WeightsError(f"the DINO checkpoint has no {exc.args[0]}", _FIX) from None
    side = math.isqrt(patches)
    if side * side != patches or width % HEAD_DIM:
        raise WeightsError(f"the DINO checkpoint has {patches} patch positions and width {width}: "
                           f"not a square grid of {HEAD_DIM}-wide heads", _FIX)
    depth = len({k.split(".")[1] for k in dino if k.startswith("blocks.")})
    return {"model_type": "vit", "architectures": ["ViTModel"], "hidden_size": width, "num_hidden_layers": depth,
            "num_attention_heads": width // HEAD_DIM, "intermediate_size": mlp, "hidden_act": "gelu",
            "image_size": side * patch, "patch_size": patch, "num_channels": 3, "qkv_bias": True,
            "layer_norm_eps": LAYER_NORM_EPS, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def vit_state_dict(dino: dict, depth: int) -> dict:
    """DINO names -> transformers ViTModel names; every DINO tensor must be used exactly once."""
    rest = dict(dino)

    def take(key: str):
        try:
            return rest.pop(key).contiguous()
        except KeyError:
            raise WeightsError(f"the DINO checkpoint has no {key}", _FIX) from None

    out = {"embeddings.cls_token": take("cls_token"), "embeddings.position_embeddings": take("pos_embed")}
    for part in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{part}"] = take(f"patch_embed.proj.{part}")
        out[f"layernorm.{part}"] = take(f"norm.{part}")
    for n in range(depth):
        layer = f"encoder.layer.{n}."
        for part in ("weight", "bias"):
            q, k, v = take(f"blocks.{n}.attn.qkv.{part}").chunk(3, dim=0)
            for name, tensor in (("query", q), ("key", k), ("value", v)):
                out[f"{layer}attention.attention.{name}.{part}"] = tensor.contiguous().clone()
            for dino_name, vit_name in _BLOCK.items():
                out[f"{layer}{vit_name}.{part}"] = take(f"blocks.{n}.{dino_name}.{part}")
    if rest:
        raise WeightsError(f"the DINO checkpoint has parameters storyd does not map: {', '.join(sorted(rest)[:5])}",
                           _FIX)
    return out


def convert_release(source: Path, out: Path) -> None:
    """Write ``out/config.json``, ``out/model.safetensors`` and ``out/conversion.json`` from the unpacked release."""
    from safetensors.torch import save_file

    backbone, origin = load_backbone(_find(source, CHECKPOINT, folder=False))
    adapter = _find(source, ADAPTER_DIR, folder=True)
    lora = read_adapter(adapter)
    dino = merge(backbone, lora)
    config = vit_config(dino)
    tensors = vit_state_dict(dino, config["num_hidden_layers"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    adapter_config = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    record = {"source": "DreamSim dino_vitb16 release", "backbone": origin, "lora_merged": True,
              "lora": {"r": lora.rank, "scaling": lora.scaling, "layers": sorted(lora.deltas),
                       "trained_biases": sorted(lora.biases), "target_modules": adapter_config.get("target_modules")}}
    (out / "conversion.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
