"""CLIP-T (panel against its own prompt) and the CLIP image encoder used by CLIP-I.

CLIP ViT-B/32 as in the reference CLIPScore: the text is ``"A photo depicts " +
base_prompt`` (no style template), cut at CLIP's 77 tokens; images are resized so
the short side is the model's input size (bicubic), centre-cropped, normalised with
CLIP's mean and std.
"""

from __future__ import annotations

from pathlib import Path

from storyd.eval import protocol
from storyd.eval.images import to_tensor


def _features(output):
    """transformers 5 returns an output object whose pooler_output is the projection; older ones a tensor."""
    return getattr(output, "pooler_output", output)


class ClipEncoder:
    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.size = int(model.config.vision_config.image_size)

    @classmethod
    def load(cls, folder: Path) -> ClipEncoder:
        from transformers import CLIPModel, CLIPTokenizer

        model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        return cls(model, CLIPTokenizer.from_pretrained(str(folder), local_files_only=True))

    def embed_images(self, images):
        """(B, D) projected image embeddings, not normalised."""
        import torch

        with torch.no_grad():
            pixels = to_tensor(images, self.size, protocol.CLIP_MEAN, protocol.CLIP_STD)
            return _features(self.model.get_image_features(pixel_values=pixels))

    def embed_texts(self, texts: list[str]):
        """(B, D) projected text embeddings of ``prefix + text``, not normalised."""
        import torch

        tokens = self.tokenizer([protocol.CLIP_PREFIX + t for t in texts], padding=True, truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt")
        with torch.no_grad():
            return _features(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                          attention_mask=tokens["attention_mask"]))

    def text_image_cosines(self, images, texts: list[str]) -> list[float]:
        """Cosine of each image with its own text."""
        import torch

        img = torch.nn.functional.normalize(self.embed_images(images).float(), dim=-1)
        txt = torch.nn.functional.normalize(self.embed_texts(texts).float(), dim=-1)
        return (img * txt).sum(dim=-1).tolist()


def clipscore(cosine: float) -> float:
    """Hessel et al.'s CLIPScore of one cosine: 2.5 x max(cos, 0)."""
    return protocol.CLIPSCORE_WEIGHT * max(cosine, 0.0)
