"""The classical backend: optical-flow warping with a cross-fade. No model, no GPU.

Dense flow is estimated both ways between the two keyframes (OpenCV's
Farnebäck method, on a copy at most ``flow_side`` pixels wide to keep it fast).
For frame time t, the start frame is pulled forward along t·F(start→end), the
end frame pulled back along (1−t)·F(end→start), and the two are blended with
weight t. Flow that fails the forward-backward check is damped, so with
unrelated panels this degrades gracefully into a plain cross-fade. t follows a smoothstep, so motion eases in and out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def ease(t: np.ndarray | float) -> np.ndarray | float:
    """Smoothstep: 0→0, 1→1, zero slope at both ends."""
    return t * t * (3.0 - 2.0 * t)


def frame_times(frames: int) -> np.ndarray:
    """The eased times of a transition's ``frames`` frames, both keyframes included."""
    if frames < 2:
        raise ValueError(f"a transition needs at least 2 frames, got {frames}")
    return ease(np.linspace(0.0, 1.0, frames))


@dataclass(frozen=True)
class InterpolateBackend:
    """Renders a transition between two RGB images of the same size."""

    flow_side: int = 256
    name: str = "interpolate"

    def render(self, start: Image.Image, end: Image.Image, frames: int, prompt: str | None = None) -> list[np.ndarray]:
        a = np.asarray(start.convert("RGB"), dtype=np.uint8)
        b = np.asarray(end.convert("RGB"), dtype=np.uint8)
        if a.shape != b.shape:
            raise ValueError(f"start and end differ in size: {a.shape} vs {b.shape}")
        return flow_transition(a, b, frames, flow_side=self.flow_side)


def estimate_flow(a: np.ndarray, b: np.ndarray, flow_side: int = 256) -> np.ndarray:
    """Dense flow F with a(x) ≈ b(x + F(x)), shape (H, W, 2) in pixels of the full-size image."""
    import cv2

    height, width = a.shape[:2]
    scale = min(1.0, flow_side / max(height, width))
    small = (max(8, round(width * scale)), max(8, round(height * scale)))
    ga = cv2.cvtColor(cv2.resize(a, small, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(cv2.resize(b, small, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    flow = cv2.calcOpticalFlowFarneback(
        ga, gb, None, pyr_scale=0.5, levels=4, winsize=21, iterations=3, poly_n=7, poly_sigma=1.5, flags=0
    )
    flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= width / small[0]
    flow[..., 1] *= height / small[1]
    return flow


def consistency(flow: np.ndarray, other: np.ndarray, grid_x: np.ndarray, grid_y: np.ndarray) -> np.ndarray:
    """Per-pixel trust in ``flow`` in [0, 1], from the forward-backward check.

    Following ``flow`` from x and then ``other`` back should return to x. Where it
    does not (occlusions, unrelated content, motion too large to track) the flow is
    scaled towards zero, so those pixels cross-fade instead of smearing.
    """
    import cv2

    back = cv2.remap(other, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)
    error = np.linalg.norm(flow + back, axis=-1)  # (H, W) pixels
    tolerance = 1.0 + 0.1 * (np.linalg.norm(flow, axis=-1) + np.linalg.norm(back, axis=-1))
    trust = np.exp(-((error / tolerance) ** 2)).astype(np.float32)
    return cv2.GaussianBlur(trust, (0, 0), 3)


def flow_transition(a: np.ndarray, b: np.ndarray, frames: int, *, flow_side: int = 256) -> list[np.ndarray]:
    """``frames`` uint8 frames from ``a`` to ``b``; the first is ``a`` and the last is ``b`` exactly."""
    import cv2

    times = frame_times(frames)
    forward = estimate_flow(a, b, flow_side)  # a(x) ≈ b(x + forward(x))
    backward = estimate_flow(b, a, flow_side)  # b(x) ≈ a(x + backward(x))
    height, width = a.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    forward, backward = (
        flow * consistency(flow, other, grid_x, grid_y)[..., None]
        for flow, other in ((forward, backward), (backward, forward))
    )
    af, bf = a.astype(np.float32), b.astype(np.float32)
    out = [a.copy()]
    for t in (float(t) for t in times[1:-1]):
        # A pixel of a at x sits at x + t·forward(x) at time t; sample a backwards from there.
        warped_a = cv2.remap(
            af, grid_x - t * forward[..., 0], grid_y - t * forward[..., 1], cv2.INTER_LINEAR, cv2.BORDER_REFLECT
        )
        warped_b = cv2.remap(
            bf,
            grid_x - (1 - t) * backward[..., 0],
            grid_y - (1 - t) * backward[..., 1],
            cv2.INTER_LINEAR,
            cv2.BORDER_REFLECT,
        )
        blended = (1 - t) * warped_a + t * warped_b
        out.append(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    out.append(b.copy())
    return out
