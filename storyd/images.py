"""Opening the user's image files: one set of checks for references, keyframes, panels and control images.

An image is refused before it is decoded when it declares more than MAX_IMAGE_PIXELS (a
"decompression bomb" costs gigabytes to decode), and a file Pillow cannot read is one
InputError naming it, never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from storyd.errors import InputError

# Larger images are photos to scale down first: decoding one costs gigabytes, and no model here sees more.
MAX_IMAGE_PIXELS = 64_000_000
REEXPORT = "re-export it as PNG or JPEG"


def image_size(path: Path, what: str) -> tuple[int, int]:
    """The (width, height) an image file declares, after checking that Pillow can read it and that
    it is not too large to decode."""
    with _readable(path, what, REEXPORT) as image:
        size = image.size
        image.verify()
    return size


def open_rgb(path: Path, what: str, hint: str = REEXPORT):
    """The image at `path`, decoded, as RGB. Errors name the file, then `what` it is ("keyframe",
    "panel"...), and `hint` says what to do with a file that cannot be read."""
    with _readable(path, what, hint) as image:
        return image.convert("RGB")


@contextlib.contextmanager
def _readable(path: Path, what: str, hint: str) -> Iterator:
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    too_large = InputError(
        f"{what} is too large to open safely (over {MAX_IMAGE_PIXELS // 1_000_000} megapixels)",
        "scale it down, e.g. to 1024 px on the long side", path=path,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with a clearer line
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise too_large
                yield image
    except Image.DecompressionBombError:
        raise too_large from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InputError(f"{what} is not a readable image", hint, path=path) from None
