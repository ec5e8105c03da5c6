"""Reference images: a character's look steered by IP-Adapter, beside Consistent Self-Attention.

A character's `reference:` images are encoded once per run by the IP-Adapter's CLIP image
encoder; several images are averaged into one embedding. The adapter then adds image
tokens to the UNet's cross-attention (`attn2`) of every panel that shows that character
alone, at the character's `reference_scale`: its reference (write-mode) panels, so the
character bank CSA fills already has the look, and its read-mode and plain panels too.
A panel that shows several characters gets no adapter (their images would blend into one
face); it keeps each look through the CSA banks it reads. CSA's self-attention (`attn1`)
processors are untouched: the adapter only replaces the cross-attention ones.

Scales are per panel, not per batch: the batch's steering characters are the adapter's
images, its own scale is 1, and each panel's `ip_adapter_masks` map holds its character's
scale for that character's image and 0 for the others (all 0 for a panel without a
reference). So a batch may mix characters and unsteered panels, a panel adds exactly its
own character's share (the others add exactly 0), and what it adds does not depend on its
batch-mates. A batch in which no panel is steered runs at adapter scale 0, which diffusers
skips outright. The weights come from the weights store (checked
against weights.lock, no hub call) and leave the UNet when the run ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storyd.errors import WeightsError
from storyd.fsutil import file_sha256
from storyd.images import open_rgb
from storyd.story.model import Character

# family -> (weights.lock entry, the adapter file inside it); both use the ViT-H image encoder
ADAPTERS = {
    "sd15": ("ip-adapter-sd15", "models/ip-adapter_sd15.safetensors"),
    "sdxl": ("ip-adapter-sdxl", "sdxl_models/ip-adapter_sdxl_vit-h.safetensors"),
}
IMAGE_ENCODER = "models/image_encoder"


def adapter_for(preset) -> tuple[str, str] | None:
    """(lock entry, adapter file) for a preset, or None where storyd has no IP-Adapter for it
    (the embedded toy model and SD2.1)."""
    if preset.source not in ("lock", "tiny"):
        return None
    return ADAPTERS.get(preset.family)


def steering_character(plan, job) -> Character | None:
    """The character whose reference images steer this panel: the only one it shows, when it
    has references and a scale above 0, on a model with an IP-Adapter."""
    if adapter_for(plan.preset) is None or len(job.prompt.characters) != 1:
        return None
    character = plan.story.characters.get(job.prompt.characters[0])
    if character is None or not character.references or character.reference_scale <= 0:
        return None
    return character


def steered(plan) -> dict[str, Character]:
    """Every character whose references steer at least one panel, by name."""
    return {c.name: c for c in (steering_character(plan, j) for j in plan.jobs) if c is not None}


def required_weights(plan) -> list[str]:
    return [adapter_for(plan.preset)[0]] if steered(plan) else []


def hash_inputs(plan, job) -> dict:
    """What of the references decides this panel's pixels (empty when none steers it)."""
    character = steering_character(plan, job)
    if character is None:
        return {}
    from storyd.weights import load_lock

    entry = load_lock().get(adapter_for(plan.preset)[0])
    return {
        "reference": {
            "images": [file_sha256(p) for p in character.references],
            "scale": character.reference_scale,
            "adapter": entry.name,
            "revision": entry.revision,
        }
    }


def reference_warnings(plan) -> list[str]:
    with_refs = [c.name for c in plan.story.characters.values() if c.references and c.reference_scale > 0]
    if not with_refs:
        return []
    if adapter_for(plan.preset) is None:
        return [
            f"model '{plan.preset.name}' has no IP-Adapter, so the reference images of {', '.join(with_refs)} "
            "are not used (they work on sd15 and sdxl)"
        ]
    used = steered(plan)
    return [
        f"{name}'s reference images steer no panel: they steer the panels that show {name} alone"
        for name in with_refs
        if name not in used
    ]


@dataclass
class ReferenceAdapter:
    """The IP-Adapter loaded in a pipeline's UNet, and each steering character's image embedding."""

    embeds: dict  # character -> (D,) mean CLIP image embedding of its references
    scales: dict[str, float]
    dim: int

    def call_kwargs(self, pipe, characters: list[str | None], *, cfg: bool, width: int, height: int) -> dict:
        """The pipeline arguments for a batch whose panels are steered by `characters` (None: not steered);
        sets the adapter's scale for the batch.

        diffusers gives every image of a batch the same adapter images, so the batch's steering
        characters are passed as that many adapter images, and each panel's mask selects its own
        character at its scale (0 for the others): a panel adds exactly its own character's share."""
        import torch

        dtype = pipe.unet.dtype
        names = sorted({c for c in characters if c is not None})
        if not names:
            pipe.set_ip_adapter_scale(0.0)  # diffusers skips the adapter: the stock cross-attention result
            empty = torch.zeros(2 if cfg else 1, 1, self.dim, dtype=dtype)
            return {"ip_adapter_image_embeds": [empty]}
        pipe.set_ip_adapter_scale(1.0)
        positive = torch.stack([self.embeds[n] for n in names])[None].to(dtype)  # (1, K, D)
        embeds = torch.cat([torch.zeros_like(positive), positive]) if cfg else positive  # unconditional: zeros
        share = torch.tensor([[self.scales[c] if c == n else 0.0 for n in names] for c in characters])  # (B, K)
        share = share.repeat(2 if cfg else 1, 1)  # both guidance halves, as diffusers stacks them
        mask = share[:, :, None, None].expand(-1, -1, max(height // 8, 1), max(width // 8, 1)).contiguous()
        return {"ip_adapter_image_embeds": [embeds], "cross_attention_kwargs": {"ip_adapter_masks": [mask]}}


def encode_references(encoder_dir: Path, characters: list[Character], *, device: str, dtype) -> dict:
    """Each character's references through the adapter's CLIP image encoder, averaged: name -> (D,)."""
    import torch
    from transformers import CLIPVisionModelWithProjection

    try:  # the Pillow backend: the same pixels with or without torchvision installed
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # transformers < 5
        from transformers import CLIPImageProcessor

    encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_dir), local_files_only=True, dtype=dtype)
    encoder = encoder.to(device).eval()
    size = encoder.config.image_size
    processor = CLIPImageProcessor(size=size, crop_size=size)  # what diffusers' load_ip_adapter sets up
    embeds = {}
    with torch.inference_mode():
        for character in characters:
            images = []
            for path in character.references:
                images.append(open_rgb(path, f"{character.name}'s reference"))
            pixels = processor(images=images, return_tensors="pt").pixel_values.to(device, dtype)
            embeds[character.name] = encoder(pixels).image_embeds.float().mean(dim=0).cpu()
    return embeds


def _adapter_state(path: Path) -> dict:
    """An IP-Adapter .safetensors (flat `image_proj.*` / `ip_adapter.*` keys) as diffusers groups it."""
    from safetensors.torch import load_file

    state: dict = {"image_proj": {}, "ip_adapter": {}}
    for key, value in load_file(str(path)).items():
        group, _, rest = key.partition(".")
        if group in state:
            state[group][rest] = value
    return state


@contextlib.contextmanager
def reference_adapter(pipe, plan, *, device: str, weights_dir: Path | None = None) -> Iterator[ReferenceAdapter | None]:
    """Load the IP-Adapter into `pipe.unet` for the story's steered characters (None when there are
    none); the UNet's processors and image projection are restored on exit. Enter it before CSA is
    installed, so that CSA's restore keeps the adapter's processors."""
    characters = steered(plan)
    if not characters:
        yield None
        return
    from storyd.weights import load_lock, resolve

    name, weight_file = adapter_for(plan.preset)
    folder = resolve(load_lock().get(name), weights_dir)
    unet = pipe.unet
    embeds = encode_references(folder / IMAGE_ENCODER, list(characters.values()), device=device, dtype=unet.dtype)
    saved = dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    try:
        unet._load_ip_adapter_weights([_adapter_state(folder / weight_file)])
    except (RuntimeError, KeyError, ValueError) as exc:
        _restore(unet, saved)
        raise WeightsError(
            f"model '{name}' does not fit model '{plan.preset.name}': {str(exc).splitlines()[0]}",
            f"check the files of {name} with `storyd weights verify {name}`",
        ) from exc
    dim = next(iter(embeds.values())).shape[-1]
    try:
        yield ReferenceAdapter(embeds, {n: c.reference_scale for n, c in characters.items()}, dim)
    finally:
        _restore(unet, saved)


def _restore(unet, saved) -> None:
    processors, projection, hid_type = saved
    unet.set_attn_processor(dict(processors))
    unet.encoder_hid_proj = projection
    unet.config.encoder_hid_dim_type = hid_type
