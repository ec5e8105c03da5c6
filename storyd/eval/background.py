"""Background removal before the identity metrics: a learned segmenter, or the border-colour key.

Published story-consistency figures (1Prompt1Story, on ConsiStory+) remove each image's
background with CarveKit and fill it with random noise before CLIP-I and DreamSim. CarveKit
needs torchvision, which does not install beside storyd's CPU torch (docs/eval.md), so storyd
segments with CLIPSeg (Lüddecke and Ecker 2022) through transformers, pinned in weights.lock as
``clipseg``: CLIPSeg is prompted with the descriptions of the characters a panel shows, and a
pixel whose probability for every one of them is below ``protocol.BACKGROUND_THRESHOLD`` is
background. The model-free border-colour key (``images.background_mask``) stays for the toy
model, whose flat backdrops it separates exactly and CLIPSeg never saw, and for machines
without CLIPSeg; the report records which method scored each run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storyd.eval import protocol
from storyd.eval.images import background_mask as key_mask
from storyd.eval.images import noise_fill

KEY = "border-colour key"


class ClipSegSegmenter:
    """CLIPSeg's foreground probability for text queries, at the image's own size."""

    def __init__(self, model, processor) -> None:
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def load(cls, folder: Path) -> ClipSegSegmenter:
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        model = CLIPSegForImageSegmentation.from_pretrained(str(folder), local_files_only=True)
        return cls(model, CLIPSegProcessor.from_pretrained(str(folder), local_files_only=True))

    def foreground(self, image, queries: list[str]) -> np.ndarray:
        """(H, W) probabilities in [0, 1]: for each pixel the highest over ``queries``."""
        import torch

        image = image.convert("RGB")
        inputs = self.processor(text=queries, images=[image] * len(queries), padding=True, truncation=True,
                                return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**inputs).logits
        logits = logits.reshape(len(queries), 1, *logits.shape[-2:]).float()  # batch 1 comes back squeezed
        sized = torch.nn.functional.interpolate(logits, size=(image.height, image.width), mode="bilinear")
        return sized.sigmoid().amax(dim=(0, 1)).numpy()

    def background_mask(self, image, queries: list[str]) -> np.ndarray:
        """(H, W) bool, True where no query reaches the threshold."""
        return self.foreground(image, queries) < protocol.BACKGROUND_THRESHOLD


def panel_queries(descriptions: dict[str, str], characters, base_prompt: str) -> list[str]:
    """What CLIPSeg looks for in a panel: its characters' descriptions, else (an older manifest,
    a panel without characters) the panel's base prompt."""
    found = [descriptions[c] for c in characters if descriptions.get(c)]
    return found or [base_prompt]


@dataclass(frozen=True)
class BackgroundRemover:
    """Replaces a panel's background with noise; ``segmenter`` None means the border-colour key."""

    segmenter: ClipSegSegmenter | None = None
    method: str = KEY  # what the report says ran

    def __call__(self, image, queries: list[str], seed: int | tuple[int, ...]):
        mask = self.segmenter.background_mask(image, queries) if self.segmenter else key_mask(image)
        return noise_fill(image, mask, seed)
