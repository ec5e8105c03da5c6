"""Write frames as H.264 MP4 (through imageio-ffmpeg) or GIF (through Pillow), atomically.

ffmpeg picks the container from the file name, so MP4s are written to a hidden
temporary ``.mp4`` beside the target and renamed over it when complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from storyd.errors import StorydError
from storyd.fsutil import atomic_open


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name, not a mkstemp file: ffmpeg creates it, so the umask sets its permissions.
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}"
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    if not frames:
        raise ValueError("no frames to write")
    height, width = frames[0].shape[:2]
    for frame in frames:
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            expected = (height, width, 3)
            raise ValueError(f"frames must be uint8 arrays of shape {expected}, got {frame.shape} {frame.dtype}")
    return width, height


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float, *, quality: int = 18) -> Path:
    """Write ``frames`` (uint8 H×W×3, even sides) as H.264/yuv420p at ``fps``; ``quality`` is the x264 CRF."""
    import imageio_ffmpeg

    width, height = _check_frames(frames)
    if width % 2 or height % 2:
        raise ValueError(f"H.264 with yuv420p needs even sides, got {width}x{height}")
    path = Path(path)
    with _atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=2,
            ffmpeg_log_level="error",
            output_params=["-crf", str(quality), "-movflags", "+faststart"],
        )
        try:
            writer.send(None)  # start ffmpeg
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
        except (OSError, RuntimeError) as exc:
            raise StorydError(f"ffmpeg failed writing the video: {exc}", path=path) from exc
        finally:
            writer.close()
    return path


def write_gif(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write ``frames`` as a looping GIF (Pillow; 256 colours per frame)."""
    _check_frames(frames)
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_open(Path(path), "wb") as handle:
        images[0].save(
            handle,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(20, round(1000 / fps)),
            loop=0,
            optimize=False,
        )
    return Path(path)


def read_video(path: Path) -> list[np.ndarray]:
    """Decode a video file into uint8 H×W×3 frames (used by training and the tests)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader]
    return frames
