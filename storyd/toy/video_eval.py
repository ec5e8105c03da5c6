"""Measures of a toy transition against the world's truth (issue 30, part 5).

A transition is rendered from the first and last frame of a held-back clip of
:mod:`storyd.toy.motion_world`, so every frame between has a truth: where the kid is and what
its silhouette looks like. The kid is found in a generated frame as what differs from the
clip's own setting (drawn without the kid, faded as the clip fades it); its silhouette is then
compared with the true one (intersection over union: pose and place together) and its centre
with the true centre (pixels). The attribute reader reads every frame's look, and two frames of
a transition agree when it reads the same value for all eight look attributes, the comic's
whole-look agreement. The first and last frames are compared with the keyframes pixel by pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from storyd.toy.captions import describe
from storyd.toy.metrics import look_pairs
from storyd.toy.world import LOOK_ATTRS, SIZE

KID_THRESHOLD = 60  # summed RGB distance from the setting above which a pixel counts as the kid's


def setting_frame(clip, index: int) -> np.ndarray:
    """Frame ``index``'s setting alone, (SIZE, SIZE, 3) uint8."""
    return np.asarray(clip.setting(index).resize((SIZE, SIZE), Image.Resampling.BOX))


def kid_silhouette(frame: np.ndarray, setting: np.ndarray) -> np.ndarray:
    """Where ``frame`` differs from its setting: a boolean (SIZE, SIZE) mask."""
    small = np.asarray(Image.fromarray(frame).resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.int32)
    return np.abs(small - setting.astype(np.int32)).sum(axis=2) > KID_THRESHOLD


def _centre(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()]) if len(xs) else None


def motion_scores(frames: Sequence[np.ndarray], clip) -> dict[str, float]:
    """Silhouette IoU and centre error (px) of the in-between frames against the truth, and the mean
    absolute pixel error (0 to 1) of the first and last frames against the keyframes."""
    ious, errors = [], []
    for i in range(1, len(frames) - 1):
        truth = np.asarray(clip.mask(i)) > 127
        seen = kid_silhouette(frames[i], setting_frame(clip, i))
        ious.append((truth & seen).sum() / max(1, (truth | seen).sum()))
        centre, true_centre = _centre(seen), _centre(truth)
        errors.append(float(np.linalg.norm(centre - true_centre)) if centre is not None else SIZE / 2)
    ends = [np.abs(np.asarray(frames[i], dtype=np.float32) - np.asarray(clip.render(j), dtype=np.float32)).mean() / 255
            for i, j in ((0, 0), (-1, len(clip.truth) - 1))]
    return {"iou": float(np.mean(ious)), "centre_px": float(np.mean(errors)), "keyframe_error": float(np.mean(ends))}


def look_agreement(frames: Sequence[np.ndarray], reader) -> dict[str, float]:
    """Over every pair of frames: the fraction agreeing on the whole look, and on each attribute on average."""
    looks = [r["figures"][0] if r["figures"] else {} for r in reader.read([Image.fromarray(f) for f in frames])]
    whole, per = [], []
    for both, agree in look_pairs(looks, LOOK_ATTRS):
        same = [both and ok for ok in agree]  # a frame without a figure agrees with nothing
        whole.append(all(same))
        per.append(np.mean(same))
    return {"identity": float(np.mean(whole)), "identity_per_attribute": float(np.mean(per))}


def look_prompt(clip) -> str:
    """The kid's look in the toy world's words, every attribute named: as `storyd animate` prompts a
    transition between two comic panels of one character, with its description (which names what the
    story says of it, often less)."""
    return describe(clip.look)


def evaluate_transitions(render, clips: Sequence, reader, *, prompted: bool = False) -> dict[str, float]:
    """``render(start, end, frames, prompt)`` on each clip's ends, every measure averaged over the clips;
    ``prompt`` is the clip's :func:`look_prompt` when ``prompted``, else None."""
    rows = []
    for clip in clips:
        frames = render(clip.render(0), clip.render(len(clip.truth) - 1), len(clip.truth),
                        look_prompt(clip) if prompted else None)
        rows.append({**motion_scores(frames, clip), **look_agreement(frames, reader)})
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
