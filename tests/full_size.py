"""Full-size SD1.5 and SDXL checkpoints with random weights, in the layout users download.

A published single file (``v1-5-pruned-emaonly.safetensors``, ``sd_xl_base_1.0.safetensors``)
keeps each model under the key names of the code that trained it: CompVis LDM for SD1.5
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``), Stability's
SGM for SDXL, whose second text encoder is an OpenCLIP model (``conditioner.embedders.1.model.*``: one
fused ``in_proj`` per attention, ``text_projection`` stored input-first, VAE attention as 1x1 convs).

`checkpoint_layout` names, for every tensor of the diffusers models the shipped configs
(storyd/configs/<family>) build, the file key it comes from and how it is cut out of that tensor;
`write_checkpoint` streams a file of that layout, random values and all, without holding the model
in memory; `file_view` is the check's side: what the loaded tensor must equal. The models are built
on the meta device, so nothing here needs more memory than the largest single tensor.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from storyd.streamed_safetensors import write_streamed

CONFIGS = Path(__file__).resolve().parent.parent / "storyd" / "configs"

# Published parameter counts of the whole checkpoint (UNet + VAE + text encoders), from weights.lock's notes.
PUBLISHED_PARAMS = {"sd15": 1_066_235_307, "sdxl": 3_468_837_867}
# The dtype the published files store (SD1.5's pruned EMA file is fp32: 4.27 GB; SDXL base is fp16: 6.94 GB).
PUBLISHED_DTYPE = {"sd15": torch.float32, "sdxl": torch.float16}


def extra_keys(family: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Tensors the training code saved that no diffusers model holds: CLIP's position ids (a persistent
    buffer in the transformers of 2022-23), LDM's noise-schedule buffers and EMA counters, OpenCLIP's
    logit scale. diffusers reads none of them; they are written so the loader is seen to skip them."""
    if family == "sd15":
        schedule = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")
        extras = {name: ((1000,), torch.float32) for name in schedule}
        extras["model_ema.decay"] = ((), torch.float32)
        extras["model_ema.num_updates"] = ((), torch.int64)
        extras["cond_stage_model.transformer.text_model.embeddings.position_ids"] = ((1, 77), torch.int64)
        return extras
    return {
        "conditioner.embedders.0.transformer.text_model.embeddings.position_ids": ((1, 77), torch.int64),
        "conditioner.embedders.1.model.logit_scale": ((), torch.float32),
    }


# --- the models the shipped configs build, on the meta device --------------------------------------


def meta_components(family: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """component -> {state-dict name: shape} of the models built from storyd/configs/<family>."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS / family
    builders = {
        "unet": lambda: UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
        "vae": lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
    }
    if family == "sdxl":
        builders["text_encoder_2"] = lambda: CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    shapes = {}
    with torch.device("meta"):
        for name, build in builders.items():
            shapes[name] = {k: tuple(t.shape) for k, t in build().state_dict().items()}
    return shapes


# --- diffusers name -> file key ----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where one diffusers tensor lives in the file: `key`, of shape `file_shape`, cut by `view`."""

    key: str
    file_shape: tuple[int, ...]
    view: str = "same"  # same | rows:<i>/<n> (a third of a fused in_proj) | transpose | squeeze


_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))


def _unet_key(name: str, config: dict) -> str:
    """An LDM UNet key: input_blocks / middle_block / output_blocks numbered as the LDM code builds them."""
    per = config["layers_per_block"] + 1  # resnets of a block, plus its down/upsampler (or an extra resnet going up)
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    module, _, leaf = name.rpartition(".")
    if module in fixed:
        return f"{fixed[module]}.{leaf}"
    parts = name.split(".")
    if parts[0] == "down_blocks":
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "downsamplers":
            return ".".join([f"input_blocks.{1 + block * per + per - 1}.0.op", *rest[1:]])
        prefix = f"input_blocks.{1 + block * per + index}.{0 if kind == 'resnets' else 1}"
    elif parts[0] == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), parts[3:]
        prefix = f"middle_block.{2 * index if kind == 'resnets' else 1}"
    else:
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        has_attention = "CrossAttn" in config["up_block_types"][block]
        if kind == "upsamplers":
            return ".".join([f"output_blocks.{block * per + per - 1}.{2 if has_attention else 1}.conv", *rest[1:]])
        prefix = f"output_blocks.{block * per + index}.{0 if kind == 'resnets' else 1}"
    inner = ".".join(rest)
    if kind == "resnets":
        inner = _rename(inner, _RESNET)
    return f"{prefix}.{inner}"


def _rename(inner: str, table) -> str:
    head, _, leaf = inner.rpartition(".")
    for new, old in table:
        if head == new:
            return f"{old}.{leaf}"
    return inner


def _vae_key(name: str, n_blocks: int) -> tuple[str, str]:
    """(LDM first-stage key, view): encoder.down.i.block.j, decoder.up numbered from the output end, and
    mid attention as 1x1 convs (q, k, v, proj_out) that diffusers squeezes into linears."""
    parts = name.split(".")
    coder, where = parts[0], parts[1]
    view = "same"
    renames = {"conv_norm_out": "norm_out"}
    if where in ("down_blocks", "up_blocks"):
        i = int(parts[2]) if where == "down_blocks" else n_blocks - 1 - int(parts[2])
        level = f"{'down' if where == 'down_blocks' else 'up'}.{i}"
        if parts[3] == "resnets":
            inner = _rename(".".join(parts[5:]), (("conv_shortcut", "nin_shortcut"),))
            key = f"{coder}.{level}.block.{parts[4]}.{inner}"
        else:  # downsamplers.0.conv / upsamplers.0.conv
            key = f"{coder}.{level}.{'downsample' if where == 'down_blocks' else 'upsample'}.conv.{parts[-1]}"
    elif where == "mid_block" and parts[2] == "resnets":
        key = f"{coder}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
    elif where == "mid_block":
        attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
        module = ".".join(parts[4:-1])
        key = f"{coder}.mid.attn_1.{attn[module]}.{parts[-1]}"
        view = "squeeze" if parts[-1] == "weight" and module != "group_norm" else "same"
    elif coder in ("quant_conv", "post_quant_conv"):
        key = name
    else:
        key = f"{coder}.{renames.get(where, where)}.{'.'.join(parts[2:])}"
    return key, view


_OPEN_CLIP = (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
              ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))


def _open_clip_source(name: str, shape: tuple[int, ...], prefix: str) -> Source:
    """OpenCLIP ViT-bigG's text tower, as SGM saved it: q, k and v are thirds of one in_proj."""
    name = name.removeprefix("text_model.")
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    if name in fixed:
        return Source(prefix + fixed[name], shape)
    if name == "text_projection.weight":  # OpenCLIP multiplies x @ P: stored (in, out)
        return Source(prefix + "text_projection", shape[::-1], "transpose")
    parts = name.split(".")  # encoder.layers.N.<module...>.<leaf>
    layer, module, leaf = parts[2], ".".join(parts[3:-1]), parts[-1]
    base = f"{prefix}transformer.resblocks.{layer}."
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        if module == f"self_attn.{proj}":
            return Source(f"{base}attn.in_proj_{leaf}", (3 * shape[0], *shape[1:]), f"rows:{i}/3")
    return Source(base + _rename(f"{module}.{leaf}", _OPEN_CLIP), shape)


def checkpoint_layout(family: str, components: dict[str, dict[str, tuple[int, ...]]]) -> dict[str, dict[str, Source]]:
    """component -> {diffusers name: Source}: where each tensor of the pipeline lives in the single file."""
    unet_config = json.loads((CONFIGS / family / "unet" / "config.json").read_text())
    n_vae = len(json.loads((CONFIGS / family / "vae" / "config.json").read_text())["block_out_channels"])
    clip_prefix = "cond_stage_model.transformer." if family == "sd15" else "conditioner.embedders.0.transformer."
    layout: dict[str, dict[str, Source]] = {}
    for component, shapes in components.items():
        out = layout[component] = {}
        for name, shape in shapes.items():
            if component == "unet":
                out[name] = Source("model.diffusion_model." + _unet_key(name, unet_config), shape)
            elif component == "vae":
                key, view = _vae_key(name, n_vae)
                out[name] = Source("first_stage_model." + key, (*shape, 1, 1) if view == "squeeze" else shape, view)
            elif component == "text_encoder":  # transformers' CLIP names, under the wrapper 2022's CLIPTextModel had
                out[name] = Source(clip_prefix + "text_model." + name.removeprefix("text_model."), shape)
            else:
                out[name] = _open_clip_source(name, shape, "conditioner.embedders.1.model.")
    return layout


def file_tensors(layout: dict[str, dict[str, Source]]) -> dict[str, tuple[int, ...]]:
    """Every key the file holds for the models, with its shape; raises if two sources disagree on one."""
    shapes: dict[str, tuple[int, ...]] = {}
    for sources in layout.values():
        for source in sources.values():
            if shapes.setdefault(source.key, source.file_shape) != source.file_shape:
                raise AssertionError(f"{source.key}: shapes {shapes[source.key]} and {source.file_shape}")
    return shapes


def file_view(tensor: torch.Tensor, source: Source) -> torch.Tensor:
    """What diffusers' tensor must be, cut from the file's tensor."""
    if source.view == "transpose":
        return tensor.T
    if source.view == "squeeze":
        return tensor[:, :, 0, 0]
    if source.view.startswith("rows:"):
        i, n = (int(v) for v in source.view[5:].split("/"))
        size = tensor.shape[0] // n
        return tensor[i * size:(i + 1) * size]
    return tensor


# --- writing the file --------------------------------------------------------------------------------


def _random(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Random values a forward pass stays finite with: weights scaled by fan-in, norm scales near 1,
    small biases; position ids as the training code kept them. Seeded by the key alone."""
    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1)
    if dtype == torch.int64:
        return torch.arange(math.prod(shape)).reshape(shape)
    if key.endswith("logit_scale"):
        return torch.tensor(math.log(1 / 0.07))
    values = torch.randn(shape, generator=g)
    if len(shape) >= 2:
        values /= math.sqrt(math.prod(shape[1:]))
    elif key.endswith("weight"):  # the only 1-d weights are norm scales
        values = 1 + 0.1 * values
    else:
        values *= 0.02
    return values.to(dtype)


def write_checkpoint(path: Path, tensors: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> str:
    """Write a .safetensors file one tensor at a time (never the whole model in memory); return its sha256."""
    names = sorted(tensors)
    index = {name: (tensors[name][1], tensors[name][0]) for name in names}
    digest = hashlib.sha256()
    write_streamed(path, {"format": "pt"}, index, (_random(name, *tensors[name]) for name in names), digest)
    return digest.hexdigest()


def checkpoint_tensors(family: str, layout: dict[str, dict[str, Source]]) -> dict[str, tuple[tuple, torch.dtype]]:
    """What the file holds: the models' tensors in the published dtype, and the extras."""
    dtype = PUBLISHED_DTYPE[family]
    return {**{k: (shape, dtype) for k, shape in file_tensors(layout).items()}, **extra_keys(family)}


def write_full_size(family: str, path: Path) -> tuple[dict[str, dict[str, Source]], str]:
    """Write `family`'s full-size checkpoint at `path`; return its layout and sha256."""
    layout = checkpoint_layout(family, meta_components(family))
    return layout, write_checkpoint(path, checkpoint_tensors(family, layout))


class RecordingCheckpoint(dict):
    """A checkpoint dict that adds each key read out of it to `read`: which keys a loader consumed."""

    def __init__(self, data, read: set) -> None:
        super().__init__(data)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def count_params(components: dict[str, dict[str, tuple[int, ...]]]) -> int:
    return sum(math.prod(shape) for shapes in components.values() for shape in shapes.values())

