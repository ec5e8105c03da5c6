"""Pinned image preprocessing for the encoders, the noise fill, and the border-colour key.

The key is the model-free background mask (background.py says when it is used instead of
CLIPSeg): colours that cover much of the image border are taken as background, and pixels
near them are replaced by seeded uniform noise, as 1Prompt1Story fills removed backgrounds.
It suits flat or two-tone backdrops (the toy world, many generated panels).
"""

from __future__ import annotations

import numpy as np

from storyd.eval import protocol


def background_mask(image) -> np.ndarray:
    """(H, W) bool, True where the pixel matches a colour that covers much of the border."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])  # (2H + 2W, 3)
    quantised = np.round(border / 16.0).astype(np.int32)
    _, inverse, counts = np.unique(quantised, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    mask = np.zeros(pixels.shape[:2], dtype=bool)
    for k in np.flatnonzero(counts >= protocol.MASK_BORDER_SHARE * len(border)):
        centre = border[inverse == k].mean(axis=0)
        mask |= np.linalg.norm(pixels - centre, axis=2) < protocol.MASK_TOLERANCE
    return mask


def noise_fill(image, mask: np.ndarray, seed: int | tuple[int, ...]):
    """A copy of ``image`` whose pixels where ``mask`` is True are uniform noise from ``seed``.

    Give each panel its own seed: the same noise behind two panels would make them look alike.
    """
    from PIL import Image

    pixels = np.asarray(image.convert("RGB")).copy()
    rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
    noise = rng.integers(0, 256, size=pixels.shape, dtype=np.uint8)
    pixels[mask] = noise[mask]
    return Image.fromarray(pixels)


def mask_background(image, seed: int | tuple[int, ...] = protocol.MASK_NOISE_SEED):
    """A copy of ``image`` whose background, by the border-colour key, is noise from ``seed``."""
    return noise_fill(image, background_mask(image), seed)


def to_tensor(images, size: int, mean, std):
    """PIL images -> (B, 3, size, size) floats: shortest side to ``size`` (bicubic), centre crop, normalise."""
    import torch
    from PIL import Image

    arrays = []
    for image in images:
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        arrays.append(np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, size, size)
    mean_t = torch.tensor(mean, dtype=batch.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def pairwise_mean(embeddings, pairs: list[tuple[int, int]]) -> float:
    """Mean cosine similarity of the embedding rows named by ``pairs``."""
    import torch

    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    sims = [float(unit[i] @ unit[j]) for i, j in pairs]
    return float(np.mean(sims)) if sims else float("nan")
