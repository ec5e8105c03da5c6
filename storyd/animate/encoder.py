"""CLIP vision encoder: images → token-level embeddings in CLIP's joint embedding space.

Every output token of the vision transformer goes through the model's final
LayerNorm and visual projection, so a frame becomes an (N, C) grid of tokens
with C the projection width (1024 for ViT-H/14). Token 0 is then exactly the
pooled ``image_embeds`` that CLIPSIM compares and that IP-Adapter for SD1.5
takes, so one encoder serves the motion predictor, the video model and the metrics.
IP-Adapter Plus instead resamples the penultimate layer's tokens (:meth:`ClipImageEncoder.hidden_tokens`,
1280 wide for ViT-H/14): a motion predictor that feeds the animatediff backend predicts those.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipImageEncoder:
    """Wraps a transformers ``CLIPVisionModelWithProjection`` with CLIP's own preprocessing."""

    def __init__(self, model, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.image_size = int(model.config.image_size)
        self.device = torch.device(device)
        self.dtype = dtype

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def num_tokens(self) -> int:
        return (self.image_size // int(self.model.config.patch_size)) ** 2 + 1

    def preprocess(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """Resize the short side to the model's size (bicubic), crop the centre, normalise → (B, 3, S, S)."""
        size = self.image_size
        batch = []
        for image in images:
            pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
            scale = size / min(pil.size)
            pil = pil.resize((max(size, round(pil.width * scale)), max(size, round(pil.height * scale))), Image.BICUBIC)
            left, top = (pil.width - size) // 2, (pil.height - size) // 2
            pil = pil.crop((left, top, left + size, top + size))
            batch.append(np.asarray(pil, dtype=np.float32) / 255.0)
        pixels = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)  # (B, 3, S, S)
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return ((pixels - mean) / std).to(self.device, self.dtype)

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """Token-level embeddings (B, N, C); token 0 equals the model's pooled ``image_embeds``."""
        return projected_tokens(self.model, self.preprocess(images))

    @property
    def hidden_width(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def hidden_tokens(self, images: Sequence[Image.Image | np.ndarray] | None = None) -> torch.Tensor:
        """The penultimate layer's tokens (B, N, hidden_width), the ones IP-Adapter Plus resamples.

        With ``images`` None: the tokens of one all-zero (normalised) input, (1, N, hidden_width),
        which diffusers takes as IP-Adapter Plus's unconditional image prompt.
        """
        if images is None:
            size = self.image_size
            pixels = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
        else:
            pixels = self.preprocess(images)
        return self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """Pooled image embeddings (B, C), as used by CLIPSIM and IP-Adapter."""
        return self.encode(images)[:, 0]


def projected_tokens(model, pixels: torch.Tensor) -> torch.Tensor:
    """Every output token of a ``CLIPVisionModelWithProjection`` through its final LayerNorm and visual
    projection: (B, N, C), token 0 being the pooled ``image_embeds``. Gradients flow (training uses it)."""
    hidden = model.vision_model(pixel_values=pixels).last_hidden_state  # (B, N, width), before the LayerNorm
    return model.visual_projection(model.vision_model.post_layernorm(hidden))


def load_clip_encoder(
    folder: Path | None = None, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ClipImageEncoder:
    """Load CLIP ViT-H/14 from ``folder``; by default the lock's verified ``clip-vit-h-14`` snapshot (offline)."""
    from transformers import CLIPVisionModelWithProjection

    if folder is None:
        from storyd.weights import load_lock, resolve

        folder = Path(resolve(load_lock().get("clip-vit-h-14")))
    from storyd.render.pipelines import quiet_loading

    with quiet_loading():
        model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    return ClipImageEncoder(model, device=device, dtype=dtype)
