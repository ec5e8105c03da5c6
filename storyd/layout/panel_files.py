"""Read a folder of existing panel images (001.png, 002.png, ...) for re-layout."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from storyd.errors import InputError
from storyd.images import open_rgb

PANEL_NAME = "{:03d}.png"
_NUMBERED = re.compile(r"^(\d{3,})\.png$")


def load_panel_images(directory: Path, count: int) -> list[Image.Image]:
    """The `count` panels of a story, in story order; any missing, extra or unreadable file is an InputError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(
            f"panel folder {directory} does not exist",
            hint="generate the panels first with `storyd comic`, or point --panels at the folder holding 001.png, ...",
        )
    extra = sorted(
        p.name for p in directory.iterdir() if (m := _NUMBERED.match(p.name)) and not 1 <= int(m.group(1)) <= count
    )
    if extra:
        raise InputError(
            f"{directory / extra[0]} has no panel in the story, which has {count} panels",
            hint="regenerate the panels with `storyd comic`, or remove the extra files",
        )
    images = []
    for n in range(1, count + 1):
        path = directory / PANEL_NAME.format(n)
        if not path.is_file():
            raise InputError(
                f"{path} is missing: the story has {count} panels",
                hint="generate the missing panels with `storyd comic`, or check --panels",
            )
        images.append(open_rgb(path, "panel", "regenerate it with `storyd comic --force`, or replace it with a PNG"))
    return images
