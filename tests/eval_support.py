"""Helpers for the eval tests: synthetic `storyd comic` output folders and tiny metric models."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def solid(colour, size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def write_story_run(folder: Path, panels, *, model: str = "tiny", csa: bool = True, name: str | None = None,
                    descriptions: dict[str, str] | None = None) -> Path:
    """A comic output folder as `storyd comic` writes it; ``panels`` is [(image, base_prompt, characters)],
    ``descriptions`` the manifest's character descriptions (None: an older manifest without them)."""
    (folder / "panels").mkdir(parents=True, exist_ok=True)
    entries = []
    for index, (image, prompt, characters) in enumerate(panels):
        file = f"panels/{index + 1:03d}.png"
        image.save(folder / file)
        entries.append({"index": index, "file": file, "prompt": prompt, "base_prompt": prompt, "negative": "",
                        "characters": list(characters), "caption": None, "seed": index, "role": "read"})
    manifest = {
        "story": {"path": f"/stories/{name or folder.name}.yaml", "name": name or folder.name, "title": "t"},
        "model": {"name": model, "family": "sd15", "revision": None, "art": model != "tiny"},
        "settings": {"width": 32, "height": 32, "consistency": {"enabled": csa}},
        "references": {},
        "panels": entries,
        **({"characters": descriptions} if descriptions is not None else {}),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def save_model_folder(model, folder: Path, lock_entry, tokenizer=None) -> Path:
    """Save a tiny model where `resolve` looks (<weights dir>/<name>/), with every file the lock lists."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    for locked in lock_entry.files:
        if not (folder / locked.path).exists():
            (folder / locked.path).write_text("{}", encoding="utf-8")
    return folder


def tiny_clip(tokenizer, pairs, seed: int = 0):
    """A tiny CLIPModel whose projections are solved by hand so that image k and text k of ``pairs`` align.

    The projections map the pooled features of the k-th pair to the k-th unit vector, so a
    panel's cosine with its own text is 1 and with another pair's text is 0.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    from storyd.eval import protocol
    from storyd.eval.images import to_tensor

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77, "eos_token_id": 49407,
                     "bos_token_id": 49406, "pad_token_id": 49407},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    pixels = to_tensor([im for im, _ in pairs], 32, protocol.CLIP_MEAN, protocol.CLIP_STD)
    tokens = tokenizer([protocol.CLIP_PREFIX + t for _, t in pairs], padding=True, return_tensors="pt")
    target = torch.eye(len(pairs), config.projection_dim)  # (k, 16)
    with torch.no_grad():
        image_pooled = model.vision_model(pixel_values=pixels).pooler_output  # (k, 32)
        text_pooled = model.text_model(**tokens).pooler_output  # (k, 32)
        for layer, pooled in ((model.visual_projection, image_pooled), (model.text_projection, text_pooled)):
            layer.weight.copy_(torch.linalg.lstsq(pooled, target).solution.T)  # (16, 32)
    return model


def tiny_vit(kind: str = "vit", seed: int = 0):
    import torch
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

    torch.manual_seed(seed)
    common = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    if kind == "dinov2":
        return Dinov2Model(Dinov2Config(**common, mlp_ratio=2)).eval()
    return ViTModel(ViTConfig(**common, intermediate_size=37), add_pooling_layer=False).eval()


def tiny_clipseg(tokenizer, logit: float | None = None, seed: int = 0):
    """A tiny CLIPSegForImageSegmentation and its processor (32 px). With ``logit`` the decoder's last layer
    outputs that value everywhere: +8 calls every pixel foreground, -8 every pixel background."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    torch.manual_seed(seed)
    config = CLIPSegConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77, "eos_token_id": 49407,
                     "bos_token_id": 49406, "pad_token_id": 49407},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16, reduce_dim=8, extract_layers=[0, 1], decoder_num_attention_heads=2,
        decoder_intermediate_size=16, conditional_layer=0,
    )
    model = CLIPSegForImageSegmentation(config).eval()
    if logit is not None:
        with torch.no_grad():
            model.decoder.transposed_convolution.weight.zero_()
            model.decoder.transposed_convolution.bias.fill_(logit)
    processor = CLIPSegProcessor(image_processor=ViTImageProcessor(size={"height": 32, "width": 32}),
                                 tokenizer=tokenizer)
    return model, processor
