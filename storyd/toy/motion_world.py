"""The toy world in motion: clips of a kid going from one panel's state to the next one's.

A clip is drawn from a seed: one kid (a :class:`~storyd.toy.world.CharacterLook`, as in the
stills) walks or runs across, stands up, sits down, starts to wave or jumps, while the setting
stays or cross-fades into another. Every frame comes with its truth: where the kid is, the
joints of its pose, how high it is off the ground, how far the setting has faded.

Each kind of motion starts and ends in a state of its own (a jump starts and ends standing on
the spot, a walk standing at two places), so the first and last frame say which motion is
between them; what happens between is what a motion predictor has to know. Poses in between
are blends of the still world's poses (:func:`~storyd.toy.world.pose_joints`) with a few
in-between ones (a crouch, a half-sit), timed with ease-in-out, never a straight line.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from storyd.toy.world import (
    SETTINGS,
    SIZE,
    CharacterLook,
    draw_posed,
    draw_setting,
    mask_of,
    pose_joints,
    random_look,
)

MOTIONS = ("walk", "run", "stand-up", "sit-down", "start-waving", "jump")
FRAMES = 16
HEIGHTS = (36.0, 44.0)  # a little under the stills' 50 px top, so a jump's apex stays in the frame
JUMP_LIFT = 0.25  # of the kid's height, at the apex
# The still-world action at each end of a motion.
END_ACTIONS = {"walk": ("standing", "standing"), "run": ("running", "running"), "stand-up": ("sitting", "standing"),
               "sit-down": ("standing", "sitting"), "start-waving": ("standing", "waving"),
               "jump": ("standing", "standing")}


@dataclass(frozen=True)
class FrameTruth:
    """What one frame shows: the kid's centre ``x``, the y of its feet (``feet``, lifted by ``lift`` off the
    ground line), its joints (``pose``: legs and arms as point chains, hip/shoulder heights) and how far
    the setting has faded from the first to the second (``fade``, 0 to 1)."""

    x: float
    feet: float
    lift: float
    pose: dict
    fade: float


@dataclass(frozen=True)
class Clip:
    """A seeded clip: ``look`` does ``motion`` while ``settings[0]`` fades into ``settings[1]`` (the same
    setting when nothing changes); ``truth`` holds one :class:`FrameTruth` per frame."""

    motion: str
    look: CharacterLook
    settings: tuple[str, str]
    detail_seeds: tuple[int, int]
    ground: float
    height: float
    stool: float | None  # y of the stool's top, in sit-down and stand-up clips
    truth: tuple[FrameTruth, ...]

    @property
    def fades(self) -> bool:
        """Whether the setting changes over the clip."""
        return self.settings[1] != self.settings[0] or self.detail_seeds[1] != self.detail_seeds[0]

    def render(self, index: int, size: int = SIZE) -> Image.Image:
        """Frame ``index`` as an RGB image; the same clip gives the same pixels."""
        big = self.setting(index)
        self._draw_kid(ImageDraw.Draw(big), self.truth[index])
        return big.resize((size, size), Image.Resampling.BOX)

    def setting(self, index: int) -> Image.Image:
        """Frame ``index``'s setting without the kid, faded as far as the frame is, at the drawing size."""
        big = draw_setting(self.settings[0], self.detail_seeds[0])
        if self.fades:
            big = Image.blend(big, draw_setting(self.settings[1], self.detail_seeds[1]), self.truth[index].fade)
        return big

    def frames(self, size: int = SIZE) -> list[Image.Image]:
        return [self.render(i, size) for i in range(len(self.truth))]

    def mask(self, index: int, size: int = SIZE) -> Image.Image:
        """Where the kid (with its stool and shadow) is in frame ``index``: 255 kid, 0 setting."""
        return mask_of(lambda draw: self._draw_kid(draw, self.truth[index]), size)

    def _draw_kid(self, draw: ImageDraw.ImageDraw, t: FrameTruth) -> None:
        draw_posed(draw, self.look, t.pose, t.x, self.ground, self.height, stool=self.stool, shadow=t.lift > 0.5)


def make_clip(seed: int, motion: str, frames: int = FRAMES, *, change_prob: float = 0.5) -> Clip:
    """The clip of ``motion`` drawn from ``seed``; with probability ``change_prob`` the setting changes."""
    if motion not in MOTIONS:
        raise ValueError(f"motion {motion!r} is not one of {MOTIONS}")
    if frames < 3:
        raise ValueError(f"a clip needs at least 3 frames, not {frames}")
    rng = random.Random(seed)
    look = random_look(rng)
    first = rng.choice(tuple(SETTINGS))
    change = rng.random() < change_prob
    second = rng.choice([s for s in SETTINGS if s != first]) if change else first
    seeds = (rng.randrange(2**31), rng.randrange(2**31))
    if not change:
        seeds = (seeds[0], seeds[0])
    h = rng.uniform(*HEIGHTS)
    ground = rng.uniform(max(46.0, 1.1 * h + JUMP_LIFT * h + 1.0), 62.0)  # 1.1 x height: a hat's top
    x0, x1 = _path(rng, motion)
    stool = None
    if motion in ("sit-down", "stand-up"):
        stool = pose_joints("sitting", x0, ground, h)["hip"] + 0.11 * h / 2
    steps = max(1, round(abs(x1 - x0) / 7))  # one stride per 7 px
    truth = []
    for i in range(frames):
        t = i / (frames - 1)
        x = x0 + (x1 - x0) * t
        pose, lift = _motion_pose(motion, t, x, ground, h, forward=1 if x1 >= x0 else -1, steps=steps)
        truth.append(FrameTruth(round(x, 3), round(pose["feet"], 3), round(lift, 3), pose, t))
    return Clip(motion, look, (first, second), seeds, ground, h, stool, tuple(truth))


def make_clips(count: int, seed: int, motions: tuple[str, ...] = MOTIONS, frames: int = FRAMES) -> list[Clip]:
    """``count`` clips, the motions in turn, clip ``i`` drawn from its own seed derived from ``seed``."""
    return [make_clip(seed * 1_000_003 + i, motions[i % len(motions)], frames) for i in range(count)]


def _path(rng: random.Random, motion: str) -> tuple[float, float]:
    """Start and end x: walks cover 12 to 22 px, runs 24 to 36, everything else stays on the spot."""
    span = {"walk": (12.0, 22.0), "run": (24.0, 36.0)}.get(motion)
    if span is None:
        x = rng.uniform(16.0, 46.0)
        return x, x
    distance = rng.uniform(*span)
    start = rng.uniform(12.0, 52.0 - distance)
    return (start, start + distance) if rng.random() < 0.5 else (start + distance, start)


# --- poses ---------------------------------------------------------------------------------------


def _ease(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3 - 2 * u)


def _three(chain: list) -> list:
    """A chain of three points (a two-point chain gets its middle), so any two poses blend point by point."""
    if len(chain) == 3:
        return list(chain)
    (ax, ay), (bx, by) = chain
    return [(ax, ay), ((ax + bx) / 2, (ay + by) / 2), (bx, by)]


def _named(action: str, cx: float, feet: float, h: float) -> dict:
    pose = pose_joints(action, cx, feet, h)
    return {**pose, "legs": [_three(c) for c in pose["legs"]], "arms": [_three(c) for c in pose["arms"]]}


def _blend(p: dict, q: dict, w: float) -> dict:
    def mix(a: float, b: float) -> float:
        return a + (b - a) * w

    def chains(name: str) -> list:
        return [[(mix(ax, bx), mix(ay, by)) for (ax, ay), (bx, by) in zip(cp, cq)] for cp, cq in zip(p[name], q[name])]

    return {"legs": chains("legs"), "arms": chains("arms"),
            **{k: mix(p[k], q[k]) for k in ("hip", "shoulder", "feet")}}


def _mirror(p: dict, cx: float) -> dict:
    """The pose flipped left to right about ``cx`` (a stride with the other leg forward)."""
    flip = [[[(2 * cx - x, y) for x, y in chain] for chain in p[name]] for name in ("legs", "arms")]
    return {**p, "legs": flip[0], "arms": flip[1]}


def _lifted(p: dict, lift: float) -> dict:
    return {**p, "legs": [[(x, y - lift) for x, y in c] for c in p["legs"]],
            "arms": [[(x, y - lift) for x, y in c] for c in p["arms"]],
            **{k: p[k] - lift for k in ("hip", "shoulder", "feet")}}


def _crouch(cx: float, feet: float, h: float) -> dict:
    """Knees bent forward, hip low, arms swung back: before a jump and after its landing."""
    hip = feet - 0.3 * h
    shoulder = hip - 0.3 * h
    return {"legs": [[(cx - 0.07 * h, hip), (cx + 0.1 * h, hip + 0.14 * h), (cx - 0.04 * h, feet)],
                     [(cx + 0.07 * h, hip), (cx + 0.18 * h, hip + 0.15 * h), (cx + 0.06 * h, feet)]],
            "arms": [[(cx - 0.15 * h, shoulder), (cx - 0.24 * h, shoulder + 0.14 * h),
                      (cx - 0.32 * h, shoulder + 0.2 * h)],
                     [(cx + 0.15 * h, shoulder), (cx + 0.04 * h, shoulder + 0.16 * h),
                      (cx - 0.04 * h, shoulder + 0.26 * h)]],
            "hip": hip, "shoulder": shoulder, "feet": feet}


def _half_sit(cx: float, feet: float, h: float) -> dict:
    """Halfway onto the stool: hip pushed back, knees forward, both arms reaching ahead for balance."""
    hip = feet - 0.32 * h
    shoulder = hip - 0.3 * h
    return {"legs": [[(cx - 0.07 * h, hip), (cx + 0.14 * h, hip + 0.12 * h), (cx + 0.1 * h, feet)],
                     [(cx + 0.07 * h, hip), (cx + 0.24 * h, hip + 0.1 * h), (cx + 0.2 * h, feet)]],
            "arms": [[(cx - 0.15 * h, shoulder), (cx + 0.05 * h, shoulder + 0.04 * h), (cx + 0.26 * h, shoulder)],
                     [(cx + 0.15 * h, shoulder), (cx + 0.3 * h, shoulder + 0.02 * h),
                      (cx + 0.44 * h, shoulder - 0.02 * h)]],
            "hip": hip, "shoulder": shoulder, "feet": feet}


def _motion_pose(motion: str, t: float, x: float, ground: float, h: float, *, forward: int, steps: int
                 ) -> tuple[dict, float]:
    """The pose at time ``t`` (0 to 1) of the clip, and how high the feet are off the ground."""
    stand = _named("standing", x, ground, h)
    if motion in ("walk", "run"):
        stride = _named("running", x, ground, h)
        stride = stride if forward > 0 else _mirror(stride, x)
        if motion == "walk":  # standing at both ends, ``steps`` strides between
            swing = math.sin(math.pi * steps * t)
            amount = 0.6 * abs(swing)
        else:  # mid-stride at both ends: an even number of strides
            swing = math.cos(math.pi * 2 * max(1, steps // 2) * t)
            amount = 0.5 + 0.5 * abs(swing)
        return _blend(stand, stride if swing >= 0 else _mirror(stride, x), amount), 0.0
    if motion == "jump":
        crouch = _crouch(x, ground, h)
        if t < 0.25:
            return _blend(stand, crouch, _ease(t / 0.25)), 0.0
        if t > 0.75:
            return _blend(crouch, stand, _ease((t - 0.75) / 0.25)), 0.0
        u = (t - 0.25) / 0.5  # in the air
        air = _named("jumping", x, ground + 0.16 * h, h)  # the still's jump, feet back on the ground line
        pose = _blend(crouch, air, _ease(u / 0.3)) if u < 0.5 else _blend(air, crouch, _ease((u - 0.7) / 0.3))
        lift = JUMP_LIFT * h * math.sin(math.pi * u)
        return _lifted(pose, lift), lift
    if motion in ("sit-down", "stand-up"):
        u = t if motion == "sit-down" else 1 - t
        half, sit = _half_sit(x, ground, h), _named("sitting", x, ground, h)
        return (_blend(stand, half, _ease(u / 0.5)) if u < 0.5 else _blend(half, sit, _ease((u - 0.5) / 0.5))), 0.0
    # start-waving: the arm goes up, then the hand waves twice and comes to rest where the still has it
    wave = _named("waving", x, ground, h)
    if t < 0.4:
        return _blend(stand, wave, _ease(t / 0.4)), 0.0
    angle = 0.7 * math.sin(2 * math.pi * 2 * (t - 0.4) / 0.6)
    (ex, ey) = wave["arms"][1][1]
    hx, hy = wave["arms"][1][2]
    turned = (ex + (hx - ex) * math.cos(angle) - (hy - ey) * math.sin(angle),
              ey + (hx - ex) * math.sin(angle) + (hy - ey) * math.cos(angle))
    return {**wave, "arms": [wave["arms"][0], [wave["arms"][1][0], (ex, ey), turned]]}, 0.0
