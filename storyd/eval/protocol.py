"""The pinned evaluation protocol: which metrics exist, the model each uses, and the fixed choices.

Published story-consistency numbers only compare when the model, text prefix, scale
and background handling are the same (docs/eval.md). Every such choice lives here,
and any change to one bumps ``PROTOCOL_VERSION`` so old and new tables never mix.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = 2  # 2: backgrounds removed by CLIPSeg where it is installed (1: the border-colour key only)

CLIP_MODEL = "clip-vit-b-32"  # weights.lock names
CLIP_B16_MODEL = "clip-vit-b-16"  # ConsiStory+'s CLIP-I
DINO_MODEL = "dino-vitb16"
DREAMSIM_MODEL = "dreamsim"
BACKGROUND_MODEL = "clipseg"  # background removal (storyd/eval/background.py)
TOY_MODEL = "toy"  # the manifest model name the toy metrics apply to

CLIP_PREFIX = "A photo depicts "  # Hessel et al. 2021, the reference clipscore.py
CLIPSCORE_WEIGHT = 2.5  # CLIPScore = 2.5 * max(cos, 0)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINO and DreamSim's DINO branch
IMAGENET_STD = (0.229, 0.224, 0.225)
# DreamSim dino_vitb16 as its package computes it by default (storyd/eval/dreamsim.py):
DREAMSIM_SIZE = 224  # whole image resized to 224 x 224, bicubic, no crop
DREAMSIM_EMBEDDING = "class token of the last block before the final layer norm, centred over features, unit length"

BACKGROUND_THRESHOLD = 0.4  # CLIPSeg probability below which (for every query) a pixel is background
MASK_TOLERANCE = 28.0  # RGB distance to a border colour below which a pixel is background
MASK_BORDER_SHARE = 0.10  # a colour must cover this share of the border to count as background
MASK_NOISE_SEED = 0

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Metric:
    name: str  # what --metrics takes and the table's row key
    label: str  # the row title in the table
    model: str  # weights.lock name, or "toy-reader" for the shipped attribute reader
    higher_is_better: bool
    scale: str  # one line for the table's footnote and docs
    protocol: str = "storyd"  # the protocol whose `auto` set it belongs to (PROTOCOLS)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("clip-t", "CLIP-T cosine", CLIP_MODEL, True, "raw cosine in [-1, 1]"),
        Metric("clipscore", "CLIP-T CLIPScore", CLIP_MODEL, True, "2.5 x max(cos, 0), in [0, 2.5]"),
        Metric("clip-i", "CLIP-I", CLIP_MODEL, True, "mean pairwise cosine in [-1, 1]"),
        Metric("dino-i", "DINO-I", DINO_MODEL, True, "mean pairwise cosine in [-1, 1]"),
        Metric("dreamsim", "DreamSim", DREAMSIM_MODEL, False, "mean pairwise 1 - cos in [0, 2], lower is better"),
        Metric("toy-identity", "toy identity agreement", "toy-reader", True, "share of panel pairs in [0, 1]"),
        Metric("toy-adherence", "toy prompt adherence", "toy-reader", True, "share of named attributes in [0, 1]"),
        # ConsiStory+ (Tewel et al. 2024, and the papers that report on its prompts): every image pair of a
        # story's set, not only panels sharing a character.
        Metric("cs-clip-t", "ConsiStory CLIP-T", CLIP_MODEL, True, "CLIPScore 2.5 x max(cos, 0), ViT-B/32",
               "consistory"),
        Metric("cs-clip-i", "ConsiStory CLIP-I", CLIP_B16_MODEL, True,
               "mean cosine over all pairs, ViT-B/16, background removed", "consistory"),
        Metric("cs-dreamsim", "ConsiStory DreamSim", DREAMSIM_MODEL, False,
               "mean 1 - cos over all pairs, background removed", "consistory"),
    )
}
PROTOCOLS = ("storyd", "consistory")
# Names --metrics accepts that stand for several rows: clip-t gives the cosine and the CLIPScore.
GROUPS: dict[str, tuple[str, ...]] = {"clip-t": ("clip-t", "clipscore"), "toy": ("toy-identity", "toy-adherence")}
CHOICES = ("auto", *METRICS, *(g for g in GROUPS if g not in METRICS))


def describe(name: str = "storyd") -> dict:
    """The protocol as data, for the JSON output and the table's footnote."""
    return {
        "name": name,
        "version": PROTOCOL_VERSION,
        "clip_prefix": CLIP_PREFIX,
        "clipscore_weight": CLIPSCORE_WEIGHT,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "confidence": CONFIDENCE,
                      "unit": "story"},
        "mask": {"method": f"{BACKGROUND_MODEL} prompted with the panel's character descriptions, noise fill; "
                           "the border-colour key for the toy model or where clipseg is not installed "
                           "(which ran: 'background' per run)",
                 "clipseg_threshold": BACKGROUND_THRESHOLD, "key_tolerance": MASK_TOLERANCE,
                 "key_border_share": MASK_BORDER_SHARE, "noise_seed": MASK_NOISE_SEED},
        "dreamsim": {"resize": f"{DREAMSIM_SIZE} x {DREAMSIM_SIZE} bicubic, no crop",
                     "normalisation": "ImageNet mean and std", "embedding": DREAMSIM_EMBEDDING,
                     "distance": "1 - cos"},
        **({"consistory": {"pairs": "all image pairs of a story", "clip_t": f"{CLIP_MODEL}, {CLIP_PREFIX!r}, x2.5",
                           "clip_i": CLIP_B16_MODEL,
                           "background": "removed before CLIP-I and DreamSim as 'mask' says (the published "
                                         "figures used CarveKit, which needs torchvision)"}}
           if name == "consistory" else {}),
    }
