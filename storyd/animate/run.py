"""``animate``: keyframes in, one MP4 per consecutive pair plus one joined MP4 out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from storyd.animate.backends.framing import FITS
from storyd.animate.backends.registry import BACKENDS, Choice, choose_backend, frames_for, lock_present, memory_mode
from storyd.animate.frames import fit_image, load_keyframes, output_size, transition_prompt
from storyd.animate.video import write_gif, write_mp4
from storyd.errors import InputError
from storyd.fsutil import atomic_write_text
from storyd.progress import NullProgress, Progress
from storyd.render.device import pick_device


class Backend(Protocol):
    """Anything that renders one transition: ``frames`` uint8 arrays from ``start`` to ``end``."""

    name: str

    def render(self, start: Image.Image, end: Image.Image, frames: int, prompt: str | None = None) -> list[np.ndarray]:
        ...


class Scorer(Protocol):
    """Computes the transition metrics of one clip (see :mod:`storyd.animate.metrics`)."""

    def score(self, frames: Sequence[np.ndarray]) -> dict[str, float]:
        ...


@dataclass
class AnimationResult:
    out_dir: Path
    backend: str
    fps: float
    frames_per_transition: int
    size: tuple[int, int]  # (width, height)
    keyframes: list[Path]
    transitions: list[Path]  # one MP4 per consecutive pair
    story: Path  # all transitions joined
    gifs: list[Path] = field(default_factory=list)
    total_frames: int = 0  # frames in the joined video
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    metrics: list[dict[str, float]] | None = None  # one dict per transition when asked for

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("out_dir", "story"):
            data[key] = str(data[key])
        for key in ("keyframes", "transitions", "gifs"):
            data[key] = [str(p) for p in data[key]]
        data["size"] = list(self.size)
        return data


def animate(
    frames_dir: Path,
    out_dir: Path,
    *,
    backend: str | Backend = "auto",
    fps: float = 12.0,
    frames: int = 16,
    size: tuple[int, int] | int | None = None,
    gif: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    motion_weights: Path | None = None,
    keyframe_attention: float | None = None,
    noise_temperature: float | None = None,
    metrics: bool | Scorer = False,
    seed: int = 0,
    video_model: str | None = None,
    fit: str = "letterbox",
    device: str = "auto",
    offload: str = "auto",
) -> AnimationResult:
    """Render a transition video for each consecutive pair of keyframes in ``frames_dir``.

    ``size`` is (width, height), an int for the longer side, or None for the keyframes' own
    size rounded down to a multiple of 8. ``frames`` counts both keyframes; in the joined
    ``story.mp4`` the keyframe shared by two transitions appears once. ``backend="auto"``
    picks the best backend whose weights are present and that fits the GPU's free memory,
    else ``interpolate``, and says why in one note (see
    :func:`storyd.animate.backends.registry.choose_backend`). ``video_model`` names a model
    of the registry instead; ``fit`` (letterbox or crop) brings the keyframes to the model's
    native size; ``offload`` is auto, none, model or group. ``keyframe_attention`` is the
    animatediff backend's weight of the keyframes in every frame's self-attention (None: its
    default; 0: off), ``noise_temperature`` the scale of its starting noise (None: its default).
    ``metrics`` is True (the pinned CLIP scorer) or a Scorer. Everything is
    checked before a model is loaded or a file written.
    """
    started = time.perf_counter()
    progress = progress or NullProgress()
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        progress.note(message)

    if frames < 2:
        raise InputError(f"--frames {frames} is too few", "a transition needs at least 2 frames (both keyframes)")
    if fps <= 0:
        raise InputError(f"--fps {fps} must be positive", "pass e.g. --fps 12")
    if fit not in FITS:
        raise InputError(f"unknown fit '{fit}'", f"use one of: {', '.join(FITS)}")
    check_drawing_settings(keyframe_attention, noise_temperature)
    keyframes = load_keyframes(Path(frames_dir))
    video_size = output_size(keyframes[0].image.size, size)
    out_dir = Path(out_dir)
    names = [f"{i + 1:03d}-{i + 2:03d}" for i in range(len(keyframes) - 1)]
    transition_paths = [out_dir / "transitions" / f"{name}.mp4" for name in names]
    story_path = out_dir / "story.mp4"
    targets = [*transition_paths, story_path]
    if gif:
        targets += [p.with_suffix(".gif") for p in targets]
    _check_free(targets, force)

    if isinstance(backend, str):
        choice, device, free = _choice(backend, video_model, device, comic_model(Path(frames_dir)))
        if backend == "auto" and video_model is None:  # an explicit choice needs no explaining
            note(choice.reason)
        renderer = _load_backend(choice, device=device, free_bytes=free, offload=offload, fit=fit,
                                 motion_weights=motion_weights, keyframe_attention=keyframe_attention,
                                 noise_temperature=noise_temperature, seed=seed, note=note)
        if frames_for(choice.model, frames) != frames:
            step, runs = choice.model.frame_step, frames_for(choice.model, frames)
            note(f"{choice.model.name} takes {step}k+1 frames: --frames {frames} runs as {runs}")
    else:
        renderer, device = backend, pick_device(device)
    scorer = _choose_scorer(metrics, device)
    images = [fit_image(k.image, video_size) for k in keyframes]
    story: list[np.ndarray] = []
    clip_frames = frames
    scores: list[dict[str, float]] = []
    total = len(names)
    for i, path in enumerate(transition_paths):
        progress.update("transitions", i, total, detail=names[i])
        clip = renderer.render(images[i], images[i + 1], frames, transition_prompt(keyframes[i], keyframes[i + 1]))
        clip_frames = len(clip)
        write_mp4(path, clip, fps)
        if gif:
            write_gif(path.with_suffix(".gif"), clip, fps)
        if scorer is not None:
            scores.append(scorer.score(clip))
        story.extend(clip if i == 0 else clip[1:])
    progress.update("transitions", total, total, detail="joining")
    write_mp4(story_path, story, fps)
    if gif:
        write_gif(story_path.with_suffix(".gif"), story, fps)
    result = AnimationResult(
        out_dir=out_dir,
        backend=renderer.name,
        fps=fps,
        frames_per_transition=clip_frames,
        size=video_size,
        keyframes=[k.path for k in keyframes],
        transitions=transition_paths,
        story=story_path,
        gifs=[p.with_suffix(".gif") for p in [*transition_paths, story_path]] if gif else [],
        total_frames=len(story),
        notes=notes,
        metrics=scores if scorer is not None else None,
    )
    result.seconds = round(time.perf_counter() - started, 3)
    atomic_write_text(out_dir / "animation.json", json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return result


def check_drawing_settings(keyframe_attention: float | None, noise_temperature: float | None) -> None:
    """Refuse a keyframe-attention weight or a noise temperature below 0, NaN or infinite."""
    for flag, value, fix in (
        ("--keyframe-attention", keyframe_attention, "pass 0 to turn it off, or a weight such as 2 (the default)"),
        ("--noise-temperature", noise_temperature, "pass e.g. 1 (the scheduler's own noise) or 0.3 (the toy stage's)"),
    ):
        if value is not None and not 0 <= value < float("inf"):
            raise InputError(f"{flag} {value} is not a finite number of 0 or more", fix)


def plan_animation(
    frames_dir: Path,
    *,
    backend: str = "auto",
    frames: int = 16,
    size: tuple[int, int] | int | None = None,
    video_model: str | None = None,
    fit: str = "letterbox",
    device: str = "auto",
    offload: str = "auto",
    keyframe_attention: float | None = None,
    noise_temperature: float | None = None,
) -> dict:
    """What :func:`animate` would do, without loading a model: backend and why, sizes, frames, memory, time.
    ``keyframe_attention`` and ``noise_temperature`` are only checked: on the GPU keyframe attention did not
    move the peak, and the temperature only scales the noise."""
    from storyd.animate.backends.framing import plan_framing
    from storyd.animate.backends.registry import GB, seconds_estimate

    check_drawing_settings(keyframe_attention, noise_temperature)

    keyframes = load_keyframes(Path(frames_dir))
    video_size = output_size(keyframes[0].image.size, size)
    choice, _, free = _choice(backend, video_model, device, comic_model(Path(frames_dir)))
    model = choice.model
    count = frames_for(model, frames)
    info: dict = {
        "backend": choice.backend, "reason": choice.reason, "model": model.name if model else None,
        "transitions": len(keyframes) - 1, "size": list(video_size), "frames": count, "lines": [choice.reason],
    }
    if model is None:
        info["lines"].append(f"{info['transitions']} transitions of {count} frames at {video_size[0]}x{video_size[1]}")
        return info
    framing = plan_framing(video_size, model.native, fit)
    mode = memory_mode(model, free, offload)
    seconds = seconds_estimate(model, count, framing.size)
    width, height = framing.size
    gpu = model.peak_bytes[mode] + model.frame_bytes * max(count - model.max_frames, 0)
    info.update(render_size=[width, height], box=list(framing.box), fit=fit, memory_mode=mode, gpu_bytes=gpu,
                seconds_per_transition=seconds, figures=model.figures)
    rule = f" ({model.frame_step}k+1)" if model.frame_step > 1 else ""
    memory = f"memory mode {mode}: about {gpu / GB:.1f} GB of GPU memory (estimate)"
    info["lines"] += [
        f"{info['transitions']} transitions of {count} frames{rule}, rendered at {width}x{height} ({fit}), "
        f"written at {video_size[0]}x{video_size[1]}",
        memory,
        "time per transition: " + (f"about {seconds:.0f} s at 50 steps, scaled from the published figure"
                                   if seconds is not None else "no published figure to scale (figures: below)"),
        f"figures: {model.figures}",
    ]
    if model.backend == "animatediff" and count > model.max_frames:
        info["lines"].insert(2, f"{count} frames is more than the {model.max_frames} {model.name} was trained on: "
                                f"its motion modules run in sliding windows of {model.max_frames}")
    return info


def _check_free(targets: list[Path], force: bool) -> None:
    if force:
        return
    for path in targets:
        if path.exists():
            raise InputError("already exists", "pass --force to overwrite, or choose another -o folder", path=path)


def default_out_dir(frames_dir: Path) -> Path:
    """Where the videos of a ``storyd comic`` folder go without -o: its ``video/`` folder. A plain
    folder of keyframes is the user's own, so storyd writes nothing into it unasked."""
    if not (Path(frames_dir) / "manifest.json").is_file():
        raise InputError("is not a storyd comic folder, so the videos have no default place",
                         "give the output folder with -o", path=frames_dir)
    return Path(frames_dir) / "video"


def comic_model(frames_dir: Path) -> str | None:
    """The model a ``storyd comic`` folder was drawn with (its manifest's ``model.name``); None for other folders."""
    try:
        return str(json.loads((frames_dir / "manifest.json").read_text(encoding="utf-8"))["model"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _choice(backend: str, video_model: str | None, device: str, comic: str | None = None
            ) -> tuple[Choice, str, int | None]:
    """The backend that runs, the device (`pick_device`'s policy) and its free memory (None off CUDA),
    each asked once, for the choice and for the memory mode alike."""
    from storyd.render.memory import free_memory

    if backend not in BACKENDS:  # before the device is asked about
        raise InputError(f"unknown backend {backend!r}", f"choose one of: {', '.join(BACKENDS)}")
    where = pick_device(device)
    free = free_memory(where) if where.startswith("cuda") else None
    choice = choose_backend(backend, video_model, device=where, free_bytes=free, present=lock_present,
                           comic_model=comic)
    return choice, where, free


def _load_backend(
    choice: Choice, *, device: str, free_bytes: int | None, offload: str, fit: str, motion_weights: Path | None,
    seed: int, note: Callable[[str], None], keyframe_attention: float | None = None,
    noise_temperature: float | None = None,
) -> Backend:
    for flag, value in (("--motion-weights", motion_weights), ("--keyframe-attention", keyframe_attention),
                        ("--noise-temperature", noise_temperature)):
        if choice.backend != "animatediff" and value is not None:
            note(f"{flag} is used by the animatediff backend only; ignored")
    chosen = {"keyframe_attention": keyframe_attention, "noise_temperature": noise_temperature}
    settings = {name: value for name, value in chosen.items() if value is not None}
    if choice.backend == "interpolate":
        from storyd.animate.interpolate import InterpolateBackend

        return InterpolateBackend()
    mode = memory_mode(choice.model, free_bytes, offload)
    if not device.startswith("cuda"):
        mode = "none"  # off a GPU there is nothing to offload to
    if choice.model.name == "toy-video":
        from storyd.toy.video_stage import load_toy_video_backend

        return load_toy_video_backend(seed=seed, fit=fit, motion_weights=motion_weights, note=note, **settings)
    if choice.backend == "animatediff":
        from storyd.animate.backends.animatediff import load_animatediff_backend

        return load_animatediff_backend(choice.model, device=device, mode=mode, fit=fit, seed=seed,
                                        motion_weights=motion_weights, note=note, **settings)
    from storyd.animate.backends.wan import load_wan_backend

    return load_wan_backend(choice.model, device=device, mode=mode, fit=fit, seed=seed, note=note)


def _choose_scorer(metrics: bool | Scorer, device: str) -> Scorer | None:
    if metrics is False:
        return None
    if metrics is True:
        from storyd.animate.metrics import load_scorer

        return load_scorer(device)
    return metrics


def default_motion_weights(model: str) -> Path | None:
    """The motion predictor a model animates with when ``--motion-weights`` is not given: the toy model's
    shipped one (trained on the toy world's clips, ``storyd.toy.motion_train``); None (spherical
    interpolation) for the others."""
    if model != "toy":
        return None
    from storyd.toy.motion_train import shipped_motion_weights

    return shipped_motion_weights()
