"""DreamSim distance (Fu et al. 2023), single-branch DINO ViT-B/16 variant.

DreamSim's ``dino_vitb16`` model is a DINO ViT-B/16 fine-tuned (LoRA) on human
similarity judgements; its distance is ``1 - cos`` of the class-token embeddings of
224 px inputs normalised with ImageNet statistics. storyd loads it as a transformers
ViTModel folder with the LoRA merged into the weights (the ``dreamsim`` entry of
weights.lock); the ``dreamsim`` pip package is not used because it downloads its
weights at run time.
"""

from __future__ import annotations

from pathlib import Path

from storyd.eval.dino import ClsEncoder


def load_dreamsim(folder: Path) -> ClsEncoder:
    """The DreamSim encoder; distances are ``1 - pairwise cosine`` of its embeddings."""
    return ClsEncoder.load(folder)
