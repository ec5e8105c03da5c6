"""The classical backend and video writing: frame counts, sizes, exact keyframes, decodable files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from storyd.animate.interpolate import (
    InterpolateBackend,
    consistency,
    estimate_flow,
    flow_transition,
    frame_times,
)
from storyd.animate.video import read_video, write_gif, write_mp4


def texture(shape=(96, 128)) -> np.ndarray:
    """A smooth random texture: something optical flow can track."""
    import cv2

    noise = (np.random.default_rng(0).random((*shape, 3)) * 255).astype(np.float32)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return np.roll(image, (dy, dx), axis=(0, 1))


INNER = (slice(16, 80), slice(16, 112))  # away from the wrapped borders


def test_frame_times_ease_from_zero_to_one():
    times = frame_times(5)
    assert times[0] == 0 and times[-1] == 1 and np.all(np.diff(times) > 0)
    with pytest.raises(ValueError):
        frame_times(1)


def test_flow_recovers_a_shift():
    a = texture()
    flow = estimate_flow(a, shifted(a, 4, 8))
    assert flow.shape == (96, 128, 2)
    dx, dy = flow[INNER].reshape(-1, 2).mean(0)
    assert abs(dx - 8) < 1 and abs(dy - 4) < 1


def test_midway_frame_is_the_half_shift_not_a_blur():
    a = texture()
    b = shifted(a, 4, 8)
    frames = flow_transition(a, b, 3)
    assert len(frames) == 3 and all(f.shape == a.shape and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(frames[0], a) and np.array_equal(frames[-1], b)
    half = shifted(a, 2, 4).astype(float)
    warp_error = np.abs(frames[1][INNER] - half[INNER]).mean()
    fade_error = np.abs((a.astype(float) + b)[INNER] / 2 - half[INNER]).mean()
    assert warp_error < 2 and fade_error > 5 * warp_error


def test_backend_renders_pil_images():
    backend = InterpolateBackend()
    a = texture()
    frames = backend.render(Image.fromarray(a), Image.fromarray(shifted(a, 0, 3)), 4)
    assert backend.name == "interpolate" and len(frames) == 4


def test_mp4_round_trip_and_atomic(tmp_path):
    frames = [np.full((48, 64, 3), v, np.uint8) for v in range(0, 250, 25)]
    path = write_mp4(tmp_path / "out" / "clip.mp4", frames, fps=8)
    decoded = read_video(path)
    assert len(decoded) == len(frames) and decoded[0].shape == (48, 64, 3)
    assert abs(int(decoded[5].mean()) - 125) < 6  # roughly the same picture
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.mp4"]  # no temp file left
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "odd.mp4", [np.zeros((5, 6, 3), np.uint8)], fps=8)
    assert not (tmp_path / "odd.mp4").exists()


def test_gif_has_every_frame(tmp_path):
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 100, 200)]
    path = write_gif(tmp_path / "clip.gif", frames, fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size == (16, 16)


def test_consistency_trusts_round_trips_and_damps_the_rest():
    height, width = 40, 50
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    shift = np.zeros((height, width, 2), np.float32)
    shift[..., 0] = 6
    assert consistency(shift, -shift, grid_x, grid_y)[10:30, 10:30].min() > 0.95  # there and back again
    assert consistency(shift, shift, grid_x, grid_y).max() < 0.1  # both say "right": contradictory
