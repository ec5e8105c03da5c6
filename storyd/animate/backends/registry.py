"""The video models storyd knows, the backends that run them, and which one ``auto`` picks.

No torch at import: ``storyd animate --plan`` and ``storyd doctor`` read this without loading a model.
Each model names its weights.lock entries, its native size (a pixel budget, the side multiple
and the aspect range it was trained on), its frame-count rule, and what memory the published
figures give. A model that ignores the last frame is listed with the reason and refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storyd.errors import InputError

BACKENDS = ("auto", "wan-flf2v", "wan-vace", "animatediff", "interpolate")
GB = 1_000_000_000
MB = 1_000_000


@dataclass(frozen=True)
class NativeSize:
    """Sizes a model renders well: about ``area`` pixels, sides divisible by ``multiple``, aspect in range."""

    area: int
    multiple: int
    min_aspect: float  # width / height
    max_aspect: float


@dataclass(frozen=True)
class VideoModel:
    name: str  # what --video-model takes
    backend: str
    weights: tuple[str, ...]  # weights.lock entries, all needed
    native: NativeSize
    frame_step: int  # frames must be frame_step·k + 1 (the VAE's temporal factor); 1: any count
    max_frames: int  # the longest clip the model was trained on (longer runs in windows or is refused)
    weights_bytes: int  # the bf16/fp16 weights of every component, for the memory plan
    peak_bytes: dict[str, int]  # memory mode -> GPU bytes at the native size, from the figures below
    figures: str  # what the published figures give, or that there are none; for --plan and docs/animate.md
    reference_seconds: float | None = None  # published seconds for max_frames at the native area, 50 steps
    frame_bytes: int = 0  # GPU bytes each frame past max_frames adds (measured); 0: no figure
    refused: str | None = None  # why storyd will not run it


WAN_720P = NativeSize(area=1280 * 720, multiple=16, min_aspect=9 / 16, max_aspect=16 / 9)
WAN_480P = NativeSize(area=832 * 480, multiple=16, min_aspect=9 / 16, max_aspect=16 / 9)
SD15 = NativeSize(area=512 * 512, multiple=8, min_aspect=2 / 3, max_aspect=3 / 2)

VIDEO_MODELS: dict[str, VideoModel] = {
    m.name: m
    for m in (
        VideoModel(
            name="wan2.1-flf2v-14b",
            backend="wan-flf2v",
            weights=("wan2.1-flf2v-14b-720p",),
            native=WAN_720P,
            frame_step=4,
            max_frames=81,
            # 14B transformer + UMT5-XXL (5.7B) + CLIP ViT-H (0.6B) + VAE, at 2 bytes a parameter
            weights_bytes=41 * GB,
            # model offload holds the transformer alone while it denoises: 41.6 GB measured (`python -m bench gpu`,
            # H200, bf16, random weights, 1280x720, 81 frames); the other two are estimates
            peak_bytes={"none": 60 * GB, "model": 42 * GB, "group": 14 * GB},
            figures="no published time or memory for FLF2V-14B at 720P; on an H200 the transformer alone (bf16, "
            "random weights) peaked at 41.6 GB and took 24.9 s a guided step at 1280x720 and 81 frames; the rest "
            "is the bf16 weights (about 41 GB) plus activations, an estimate",
        ),
        VideoModel(
            name="wan2.1-vace-1.3b",
            backend="wan-vace",
            weights=("wan2.1-vace-1.3b",),
            native=WAN_480P,
            frame_step=4,
            max_frames=81,
            weights_bytes=14 * GB,  # 1.3B + VACE blocks, UMT5-XXL, VAE
            peak_bytes={"none": 20 * GB, "model": 8 * GB, "group": 6 * GB},
            figures="Wan2.1's README gives 8.19 GB of GPU memory and about 4 minutes on an RTX 4090 for a "
            "5-second 480P clip from the 1.3B text-to-video model (model offload); VACE-1.3B shares that backbone. "
            "On an H200 its transformer alone (bf16, random weights) peaked at 7.6 GB and took 2.1 s a guided step",
            reference_seconds=240.0,
        ),
        VideoModel(
            name="animatediff-v3",
            backend="animatediff",
            weights=("sd15-diffusers", "animatediff-motion-v1-5-3", "sparsectrl-rgb", "ip-adapter-plus-sd15",
                     "clip-vit-h-14"),
            native=SD15,
            frame_step=1,
            max_frames=16,  # AnimateDiff v3's training clips; longer transitions run in FreeNoise windows
            # SD1.5 2.1 GB, v3 motion module 0.8, SparseCtrl RGB 1.0, CLIP ViT-H 1.3, IP-Adapter Plus 0.1
            weights_bytes=5 * GB,
            # measured: `python -m bench gpu` on an H200 (2026-12-04), the whole backend in fp16 on weights
            # built from the configs, 512 x 512, 16 frames, 25 steps, keyframe attention on (it did not move the peak)
            peak_bytes={"none": 12_800 * MB, "model": 10_700 * MB, "group": 6_600 * MB},
            frame_bytes=230 * MB,  # 24 frames peaked 1.8 GB above 16: the motion windows leave the spatial layers whole
            figures="measured on an H200 (fp16, random weights built from the configs, 512 x 512, 16 frames, "
            "25 steps): peak 12.8 GB with no offload, 10.7 with model offload, 6.6 with group offload, "
            "0.23 GB more a frame past 16; 6.6 s a transition with no offload",
        ),
        VideoModel(
            name="toy-video",
            backend="animatediff",
            weights=("toy",),
            native=NativeSize(area=64 * 64, multiple=8, min_aspect=2 / 3, max_aspect=3 / 2),
            frame_step=1,
            max_frames=16,  # the toy world's clips
            weights_bytes=20_000_000,  # the toy model and its video stage, float16 on disk
            peak_bytes={"none": GB // 2, "model": GB // 2, "group": GB // 2},
            figures="the toy model's video stage (storyd/assets/toy/video), trained and measured on the CPU; "
            "no published figures",
        ),
        VideoModel(
            name="wan2.2-ti2v-5b",
            backend="wan-flf2v",
            weights=(),
            native=NativeSize(area=1280 * 704, multiple=32, min_aspect=9 / 16, max_aspect=16 / 9),
            frame_step=4,
            max_frames=121,
            weights_bytes=0,
            peak_bytes={},
            figures="",
            refused="Wan2.2-TI2V-5B conditions on the first frame only: diffusers' WanImageToVideoPipeline "
            "(expand_timesteps) drops last_image, so the transition would not end on the next panel",
        ),
    )
}
DEFAULT_MODEL = {"wan-flf2v": "wan2.1-flf2v-14b", "wan-vace": "wan2.1-vace-1.3b", "animatediff": "animatediff-v3"}
AUTO_ORDER = ("wan-flf2v", "wan-vace", "animatediff")  # best first; auto takes the first that fits and is present


@dataclass(frozen=True)
class Choice:
    backend: str
    model: VideoModel | None  # None for interpolate
    reason: str  # one line: why this backend


def get_video_model(name: str) -> VideoModel:
    """The model named ``name``; a refused model raises an InputError that says why."""
    model = VIDEO_MODELS.get(name)
    if model is None:
        raise InputError(f"unknown video model '{name}'", f"choose one of: {', '.join(sorted(VIDEO_MODELS))}")
    if model.refused is not None:
        usable = ", ".join(n for n, m in sorted(VIDEO_MODELS.items()) if m.refused is None)
        raise InputError(f"video model '{name}' is refused: {model.refused}", f"use one of: {usable}")
    return model


def frames_for(model: VideoModel | None, requested: int) -> int:
    """The frame count the model runs: ``requested`` rounded up to frame_step·k + 1."""
    if model is None or model.frame_step == 1:
        return requested
    step = model.frame_step
    return max(step + 1, -(-(requested - 1) // step) * step + 1)


def choose_backend(
    requested: str,
    video_model: str | None,
    *,
    device: str,
    free_bytes: int | None,
    present: Callable[[tuple[str, ...]], str | None],
    comic_model: str | None = None,
) -> Choice:
    """Which backend runs, and one line saying why.

    ``present(weights)`` returns None when every lock entry is on disk, else what is missing.
    An explicit backend or model is taken as asked (its weights are checked when it loads);
    ``auto`` takes the first of AUTO_ORDER whose weights are present and whose smallest memory
    mode fits ``free_bytes`` on a CUDA device, else ``interpolate``. A comic drawn by the toy
    model (``comic_model``, from its manifest) gets the toy model's own video stage, anywhere.
    """
    if requested not in BACKENDS:
        raise InputError(f"unknown backend '{requested}'", f"choose one of: {', '.join(BACKENDS)}")
    if video_model is not None:
        model = get_video_model(video_model)
        if requested not in ("auto", model.backend):
            raise InputError(f"--video-model {video_model} runs on the {model.backend} backend, not {requested}",
                             f"drop --backend or pass --backend {model.backend}")
        return Choice(model.backend, model, f"{model.backend} with {model.name}: asked for by --video-model")
    if requested == "interpolate":
        return Choice("interpolate", None, "interpolate: asked for by --backend")
    if comic_model == "toy" and requested in ("auto", "animatediff"):
        model = VIDEO_MODELS["toy-video"]
        return Choice("animatediff", model, "animatediff with toy-video: the comic was drawn by the toy model, "
                      "whose video stage runs on the CPU")
    if requested != "auto":
        model = VIDEO_MODELS[DEFAULT_MODEL[requested]]
        return Choice(requested, model, f"{requested} with {model.name}: asked for by --backend")
    if not device.startswith("cuda"):
        return Choice("interpolate", None, f"interpolate: no CUDA GPU here ({device}), and the video models need one")
    skipped = []
    for backend in AUTO_ORDER:
        model = VIDEO_MODELS[DEFAULT_MODEL[backend]]
        missing = present(model.weights)
        need = min(model.peak_bytes.values())
        if missing is not None:
            skipped.append(f"{model.name} weights not present ({missing})")
        elif free_bytes is not None and free_bytes < need:
            skipped.append(f"{model.name} needs {need / GB:.0f} GB, {free_bytes / GB:.0f} GB free")
        else:
            fits = "" if free_bytes is None else f", {free_bytes / GB:.0f} GB free"
            return Choice(backend, model, f"{backend} with {model.name}: weights present{fits}")
    return Choice("interpolate", None, "interpolate: " + "; ".join(skipped))


def memory_mode(model: VideoModel, free_bytes: int | None, requested: str = "auto") -> str:
    """none, model (diffusers' model CPU offload) or group (group offload): the fastest that fits."""
    if requested != "auto":
        if requested not in model.peak_bytes:
            raise InputError(f"unknown offload '{requested}'", f"use one of: auto, {', '.join(model.peak_bytes)}")
        return requested
    if free_bytes is None:
        return "model"
    for mode in ("none", "model", "group"):
        if model.peak_bytes[mode] <= free_bytes:
            return mode
    return "group"


def seconds_estimate(model: VideoModel, frames: int, size: tuple[int, int], steps: int = 50) -> float | None:
    """Seconds per transition scaled from the published figure (frames, pixels, steps); None without one."""
    if model.reference_seconds is None:
        return None
    pixels = size[0] * size[1] / model.native.area
    return model.reference_seconds * frames / model.max_frames * pixels * steps / 50


def lock_present(weights: tuple[str, ...], weights_dir=None) -> str | None:
    """None when every entry is on disk and matches the lock, else the first problem (for ``present``)."""
    from storyd.weights import load_lock
    from storyd.weights.store import verify_entry

    lock = load_lock()
    for name in weights:
        try:
            entry = lock.get(name)
        except InputError:
            return f"'{name}' is not in weights.lock"
        result = verify_entry(entry, weights_dir, check=False)
        if result.status in ("missing", "corrupt"):
            return f"{name}: {result.status}"
    return None
