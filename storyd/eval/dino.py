"""The DINO image encoder behind DINO-I.

DINO ViT-B/16 (``facebook/dino-vitb16``, a transformers ViTModel); the embedding is
the class token of the last layer after the final layer norm. A DINOv2 folder
(Dinov2Model) works the same way. Preprocessing: short side to the model's input
size (bicubic), centre crop, ImageNet mean and std.
"""

from __future__ import annotations

from pathlib import Path

from storyd.eval import protocol
from storyd.eval.images import to_tensor


class ClsEncoder:
    """Any transformers vision backbone whose ``last_hidden_state[:, 0]`` is a class token."""

    def __init__(self, model, mean=protocol.IMAGENET_MEAN, std=protocol.IMAGENET_STD) -> None:
        self.model = model.eval()
        self.size = int(model.config.image_size)
        self.mean, self.std = mean, std

    @classmethod
    def load(cls, folder: Path) -> ClsEncoder:
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        extra = {"add_pooling_layer": False} if config.model_type == "vit" else {}  # the class token is the output
        return cls(AutoModel.from_pretrained(str(folder), config=config, local_files_only=True, **extra))

    def embed_images(self, images):
        """(B, D) class-token embeddings, not normalised."""
        import torch

        with torch.no_grad():
            pixels = to_tensor(images, self.size, self.mean, self.std)
            return self.model(pixel_values=pixels).last_hidden_state[:, 0]
