"""DreamSim distance (Fu et al. 2023), single-branch DINO ViT-B/16 variant.

DreamSim's ``dino_vitb16`` model is a DINO ViT-B/16 fine-tuned (LoRA) on human
similarity judgements. What ``dreamsim(dreamsim_type="dino_vitb16")`` computes with its
defaults (dreamsim 0.2.1), and what this module reproduces:

- preprocessing: the whole image resized to 224 x 224 (bicubic, no crop, so the aspect
  ratio is not kept), scaled to [0, 1], ImageNet mean and std;
- embedding: the class token output by the last transformer block, *before* DINO's final
  layer norm, then (``normalize_embeds=True``) minus its own mean over the 768 features
  and divided by its length;
- distance: ``1 - cos`` of two embeddings.

(Read from the 0.2.1 source: ``embed`` hooks the output of block 11, the last; with the LoRA
its MLP head is the identity.) storyd loads the model as a transformers ViTModel folder with
the LoRA merged into the weights (the ``dreamsim`` entry of weights.lock; dreamsim_convert.py
builds it). The ``dreamsim`` pip package cannot be used: it imports torchvision, and the only
torchvision for torch 2.13 is a CUDA build that does not load beside the CPU wheel
(docs/eval.md); it would also fetch its weights at run time. tests/test_dreamsim.py checks
this module against a tiny DINO with peft's own LoRA.
"""

from __future__ import annotations

from pathlib import Path

from storyd.eval import protocol


def resize_to_tensor(images, size: int, mean=protocol.IMAGENET_MEAN, std=protocol.IMAGENET_STD):
    """PIL images -> (B, 3, size, size): each image squeezed to size x size (bicubic), normalised."""
    import numpy as np
    import torch
    from PIL import Image

    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
              for im in images]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def centre_and_normalise(embeddings):
    """DreamSim's ``normalize_embeds``: each row minus its mean over features, then unit length."""
    import torch

    centred = embeddings - embeddings.mean(dim=-1, keepdim=True)
    return torch.nn.functional.normalize(centred, dim=-1)


class DreamSimEncoder:
    """``embed_images`` gives DreamSim embeddings; distances are ``1 - cos`` of two of them."""

    def __init__(self, model) -> None:
        self.model = model.eval()
        self.size = int(model.config.image_size)  # 224 for the real model

    @classmethod
    def load(cls, folder: Path) -> DreamSimEncoder:
        from transformers import ViTModel

        return cls(ViTModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False))

    def embed_pixels(self, pixels):
        """(B, 3, size, size) normalised pixels -> (B, D) unit embeddings."""
        import torch

        with torch.no_grad():
            hidden = self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        return centre_and_normalise(hidden[:, 0].float())

    def embed_images(self, images):
        return self.embed_pixels(resize_to_tensor(images, self.size))


def load_dreamsim(folder: Path) -> DreamSimEncoder:
    """The DreamSim encoder from a converted folder (what `resolve` returns for the ``dreamsim`` entry)."""
    return DreamSimEncoder.load(folder)
