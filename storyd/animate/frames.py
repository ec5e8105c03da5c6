"""Load and check the keyframes a transition video is made from.

A keyframe folder is either a plain folder of PNG/JPEG files, taken in natural
sort order (``2.png`` before ``10.png``), or a ``storyd comic`` output folder,
whose ``manifest.json`` gives the panel order and each panel's prompt.
Everything is checked before any model is loaded, and every problem is an
:class:`InputError` that names the file and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from storyd.errors import InputError
from storyd.images import open_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Keyframe:
    path: Path
    image: Image.Image  # RGB
    prompt: str | None = None
    characters: tuple[str, ...] = ()  # the descriptions of the characters the panel shows, in its order


def transition_prompt(start: Keyframe, end: Keyframe) -> str | None:
    """The prompt for the frames from ``start`` to ``end``: the descriptions of the characters both
    panels show, joined with "and"; the end panel's own prompt when they share none.

    A video model applies one prompt to every frame, so the end panel's action and setting would
    pull the first frames toward the end, against the first keyframe; who is in both panels is
    true of every frame (docs/animate.md#prompts).
    """
    shared = [d for d in end.characters if d in start.characters]
    return " and ".join(shared) if shared else end.prompt


def natural_key(name: str) -> list[object]:
    """Sort key that orders the digit runs in a name by value: ``2.png`` < ``10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def load_keyframes(folder: Path) -> list[Keyframe]:
    """Return the keyframes in ``folder`` in story order; at least two, all the same size."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(
            "no such folder", "pass a folder of PNG/JPEG keyframes or a `storyd comic` output", path=folder
        )
    if not folder.is_dir():
        raise InputError("not a folder", "pass the folder that holds the keyframes, not a file", path=folder)
    manifest = folder / "manifest.json"
    listed = _from_manifest(manifest) if manifest.is_file() else _from_listing(folder)
    if len(listed) < 2:
        found = "no PNG or JPEG keyframes" if not listed else "only one keyframe"
        raise InputError(f"{found} found", "a transition needs at least two images (PNG or JPEG)", path=folder)
    frames = [Keyframe(path, open_rgb(path, "keyframe", "replace or remove the file"), prompt, characters)
              for path, prompt, characters in listed]
    first = frames[0]
    for frame in frames[1:]:
        if frame.image.size != first.image.size:
            raise InputError(
                f"is {_size(frame.image)} but {first.path.name} is {_size(first.image)}",
                "keyframes must all be one size; resize them to match",
                path=frame.path,
            )
    return frames


def _from_listing(folder: Path) -> list[tuple[Path, str | None, tuple[str, ...]]]:
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return [(p, None, ()) for p in sorted(files, key=lambda p: natural_key(p.name))]


def _from_manifest(manifest: Path) -> list[tuple[Path, str | None, tuple[str, ...]]]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        panels = sorted(data["panels"], key=lambda panel: int(panel["index"]))
        described = data.get("characters") or {}
        listed = [(manifest.parent / str(panel["file"]), panel.get("prompt"),
                   tuple(str(described[name]) for name in panel.get("characters", ()) if name in described))
                  for panel in panels]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"not a storyd comic manifest ({exc.__class__.__name__}: {exc})",
            "fix it, or move it away to animate the folder's images in name order",
            path=manifest,
        ) from None
    for path, _, _ in listed:
        if not path.is_file():
            raise InputError(
                "is listed in manifest.json but missing", "re-run `storyd comic` for this folder", path=path
            )
    return listed


def _size(image: Image.Image) -> str:
    return f"{image.width}x{image.height}"


def fit_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``image`` to cover ``size`` (width, height) and crop the centre; the aspect ratio is kept."""
    width, height = size
    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    scaled = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    left = (scaled.width - width) // 2
    top = (scaled.height - height) // 2
    return scaled.crop((left, top, left + width, top + height))


def output_size(source: tuple[int, int], requested: tuple[int, int] | int | None, multiple: int = 8) -> tuple[int, int]:
    """The video size (width, height) from the keyframes' ``source`` size and the ``--size`` request.

    ``None`` keeps the source size rounded down to ``multiple``; an int is the longer
    side, the other following the source's aspect ratio; a pair is taken as given
    after a check. Multiples of 8 suit the VAE (8x downsampling) and H.264 with
    yuv420p (even sides).
    """
    if requested is None:
        width, height = (max(multiple, side - side % multiple) for side in source)
        return width, height
    if isinstance(requested, int):
        long, short = max(source), min(source)
        other = max(multiple, round(requested * short / long / multiple) * multiple)
        requested = (requested, other) if source[0] >= source[1] else (other, requested)
    width, height = requested
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise InputError(
            f"video size {width}x{height} is not a positive multiple of {multiple}",
            f"pass --size with sides divisible by {multiple}, e.g. 512x512",
        )
    return width, height


def parse_size(text: str) -> tuple[int, int] | int:
    """Parse ``WxH`` into a pair, or a single ``N`` (the longer side) into an int; see :func:`output_size`."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise InputError(
            f"can't read size {text!r}", "use WIDTHxHEIGHT (e.g. 512x384) or one number for the longer side"
        )
    if match.group(2) is None:
        return int(match.group(1))
    return int(match.group(1)), int(match.group(2))
