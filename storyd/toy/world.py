"""The toy world: kids in simple settings, drawn with Pillow at 64x64 from a seed.

The attribute sets are small on purpose, so that a model of a few million
parameters can learn them and a 64 px image still shows them. Scenes are drawn
at four times the size and box-filtered down, which gives clean anti-aliased
edges while keeping flat colours close to their palette value.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw

SIZE = 64
_SS = 4  # supersampling factor
SUPERSAMPLE = _SS

RGB = tuple[int, int, int]

SETTINGS: dict[str, str] = {  # name -> phrase used in captions
    "beach": "on the beach",
    "forest": "in a forest",
    "city": "on a city street",
    "snow": "in a snowy field",
    "night": "under a night sky",
    "room": "in a room",
}
ACTIONS = ("standing", "waving", "running", "sitting", "jumping")
HAIR_COLOURS: dict[str, RGB] = {
    "black": (25, 22, 22),
    "brown": (115, 65, 28),
    "blond": (240, 208, 80),
    "red": (205, 70, 25),
}
HAIR_STYLES = ("short", "long")
SKIN_TONES: dict[str, RGB] = {"light": (252, 218, 188), "tan": (208, 152, 104), "dark": (112, 72, 44)}
SHIRT_COLOURS: dict[str, RGB] = {
    "red": (222, 36, 36),
    "blue": (36, 84, 226),
    "green": (38, 172, 58),
    "yellow": (246, 218, 36),
    "purple": (142, 58, 196),
    "orange": (246, 138, 26),
}
PATTERNS = ("plain", "striped")
TROUSERS_COLOURS: dict[str, RGB] = {
    "blue": (48, 68, 150),
    "black": (30, 30, 36),
    "brown": (124, 82, 44),
    "grey": (150, 150, 156),
}
HAT_RGB: RGB = (0, 150, 150)
STRIPE_RGB: RGB = (250, 250, 250)

# Every attribute of a look, in the order descriptions name them.
LOOK_ATTRS = ("hair_style", "hair_colour", "skin", "shirt_pattern", "shirt_colour", "trousers", "hat", "glasses")
LOOK_CHOICES: dict[str, tuple] = {
    "hair_colour": tuple(HAIR_COLOURS),
    "hair_style": HAIR_STYLES,
    "skin": tuple(SKIN_TONES),
    "shirt_colour": tuple(SHIRT_COLOURS),
    "shirt_pattern": PATTERNS,
    "trousers": tuple(TROUSERS_COLOURS),
    "hat": (False, True),
    "glasses": (False, True),
}


@dataclass(frozen=True)
class CharacterLook:
    """A character's identity: what stays the same from panel to panel."""

    hair_colour: str = "brown"
    hair_style: str = "short"
    skin: str = "light"
    shirt_colour: str = "blue"
    shirt_pattern: str = "plain"
    trousers: str = "blue"
    hat: bool = False
    glasses: bool = False

    def __post_init__(self) -> None:
        for name in LOOK_ATTRS:
            if getattr(self, name) not in LOOK_CHOICES[name]:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {LOOK_CHOICES[name]}")

    def as_dict(self) -> dict[str, str | bool]:
        return {name: getattr(self, name) for name in LOOK_ATTRS}


@dataclass(frozen=True)
class Figure:
    """One character placed in a scene: its look, what it does, where and how big (64 px units)."""

    look: CharacterLook
    action: str = "standing"
    x: float = 32.0  # centre
    ground: float = 56.0  # y of the feet
    height: float = 36.0  # feet to top of head

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r} is not one of {ACTIONS}")


@dataclass(frozen=True)
class Scene:
    """A setting with one or two figures, left to right. ``detail_seed`` places the scenery."""

    setting: str
    figures: tuple[Figure, ...]
    detail_seed: int = 0

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"setting {self.setting!r} is not one of {tuple(SETTINGS)}")
        if not 1 <= len(self.figures) <= 2:
            raise ValueError("a scene has one or two figures")


# A kid alone in a scene is 36 to 50 px tall: big enough that its shirt covers about four by
# four latent cells, where a first version's 28 to 44 px left the model two or three cells
# to learn a colour from.
SOLO_HEIGHTS = (36.0, 50.0)


def random_look(rng: random.Random) -> CharacterLook:
    return CharacterLook(**{name: rng.choice(LOOK_CHOICES[name]) for name in LOOK_ATTRS})


def random_scene(rng: random.Random, *, two_prob: float = 0.25) -> Scene:
    """A random scene; with probability ``two_prob`` it has two characters, left and right."""
    setting = rng.choice(tuple(SETTINGS))
    count = 2 if rng.random() < two_prob else 1
    spans = [(14.0, 50.0)] if count == 1 else [(12.0, 26.0), (38.0, 52.0)]
    heights = SOLO_HEIGHTS if count == 1 else (28.0, 40.0)
    figures = tuple(_place(rng, lambda: random_look(rng), span, heights) for span in spans)
    return Scene(setting, figures, detail_seed=rng.randrange(2**31))


def story_scenes(rng: random.Random, count: int) -> tuple[Scene, ...]:
    """``count`` one-figure scenes of the same kid (one random look), each with its own action,
    setting, place and size: the panels of a story, as the model sees them in training."""
    look = random_look(rng)
    scenes = []
    for _ in range(count):
        figure = _place(rng, lambda: look, (14.0, 50.0), SOLO_HEIGHTS)
        scenes.append(Scene(rng.choice(tuple(SETTINGS)), (figure,), detail_seed=rng.randrange(2**31)))
    return tuple(scenes)


def posed_scene(rng: random.Random, look: CharacterLook, action: str, setting: str) -> Scene:
    """A kid of ``look`` doing ``action`` in ``setting``, at a random place and size."""
    return Scene(setting, (_place(rng, lambda: look, (14.0, 50.0), SOLO_HEIGHTS, action),),
                 detail_seed=rng.randrange(2**31))


def _place(rng: random.Random, look, span: tuple[float, float], heights: tuple[float, float],
           action: str | None = None) -> Figure:
    """A figure of ``look()`` at a random size, ground line, action (unless given) and x within
    ``span``; the draws come in one fixed order, so a seed gives the same scenes it always gave."""
    height = rng.uniform(*heights)
    drawn = rng.choice(ACTIONS)
    action = action or drawn
    lift = 0.16 * height if action == "jumping" else 0.0  # a jump raises the feet (see pose_joints)
    ground = rng.uniform(min(max(46.0, 1.1 * height + lift + 1.0), 62.0), 62.0)  # 1.1 x height: a hat's top
    return Figure(look(), action, rng.uniform(*span), ground, height)


def render(scene: Scene, size: int = SIZE) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``size`` x ``size`` pixels; the same scene gives the same pixels."""
    big = draw_setting(scene.setting, scene.detail_seed)
    draw = ImageDraw.Draw(big)
    for figure in scene.figures:
        _draw_figure(draw, figure)
    return big.resize((size, size), Image.Resampling.BOX)


def draw_setting(setting: str, detail_seed: int) -> Image.Image:
    """The empty setting at the supersampled drawing size (``SIZE * SUPERSAMPLE`` px square)."""
    big = Image.new("RGB", (SIZE * _SS, SIZE * _SS))
    _draw_setting(ImageDraw.Draw(big), setting, random.Random(detail_seed))
    return big


def figure_mask(scene: Scene, size: int = SIZE) -> Image.Image:
    """Where ``scene``'s figures are (with their stools and shadows): an L image, 255 where a
    pixel is all figure, 0 where it is all setting."""
    return mask_of(lambda draw: [_draw_figure(draw, figure) for figure in scene.figures], size)


def mask_of(draw_figures: Callable[[ImageDraw.ImageDraw], object], size: int = SIZE) -> Image.Image:
    """Where ``draw_figures`` draws: it draws over black and over white, and a pixel that comes out
    the same on both belongs to a figure (255), one that differs to the setting (0)."""
    over = []
    for background in ((0, 0, 0), (255, 255, 255)):
        big = Image.new("RGB", (SIZE * _SS, SIZE * _SS), background)
        draw_figures(ImageDraw.Draw(big))
        over.append(big)
    figure = ImageChops.difference(*over).convert("L").point(lambda v: 255 if v < 128 else 0)
    return figure.resize((size, size), Image.Resampling.BOX)


# --- scenery -------------------------------------------------------------------------------------


def _s(v: float) -> int:
    return round(v * _SS)


def _rect(draw: ImageDraw.ImageDraw, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
    draw.rectangle((_s(x0), _s(y0), _s(x1) - 1, _s(y1) - 1), fill=fill)


def _disc(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: RGB) -> None:
    draw.ellipse((_s(cx - r), _s(cy - r), _s(cx + r), _s(cy + r)), fill=fill)


def _draw_setting(draw: ImageDraw.ImageDraw, setting: str, rng: random.Random) -> None:
    horizon = rng.uniform(24, 34)
    if setting == "beach":
        _rect(draw, 0, 0, 64, horizon - 6, (135, 200, 240))
        _rect(draw, 0, horizon - 6, 64, horizon, (30, 110, 195))
        _rect(draw, 0, horizon, 64, 64, (236, 212, 156))
        _disc(draw, rng.uniform(6, 58), rng.uniform(4, 10), 4, (255, 236, 90))
    elif setting == "forest":
        _rect(draw, 0, 0, 64, horizon, (150, 200, 170))
        _rect(draw, 0, horizon, 64, 64, (74, 132, 52))
        for _ in range(rng.randint(3, 5)):
            x = rng.uniform(0, 64)
            _rect(draw, x - 1.5, horizon - 10, x + 1.5, horizon + 2, (96, 62, 34))
            _disc(draw, x, horizon - 14, rng.uniform(6, 9), (24, 86, 36))
    elif setting == "city":
        _rect(draw, 0, 0, 64, horizon, (176, 196, 218))
        x = -rng.uniform(0, 6)
        while x < 64:
            w = rng.uniform(10, 16)
            top = rng.uniform(4, horizon - 8)
            _rect(draw, x, top, x + w - 1, horizon, rng.choice([(120, 116, 124), (150, 92, 72), (96, 100, 118)]))
            for wy in range(int(top) + 3, int(horizon) - 2, 5):
                for wx in (x + 2, x + w / 2 + 1):
                    _rect(draw, wx, wy, wx + 2, wy + 2, (236, 226, 150))
            x += w
        _rect(draw, 0, horizon, 64, horizon + 4, (196, 196, 190))
        _rect(draw, 0, horizon + 4, 64, 64, (78, 78, 84))
        for sx in range(0, 64, 12):
            _rect(draw, sx + rng.uniform(0, 2), 50, sx + 6, 51, (226, 226, 226))
    elif setting == "snow":
        _rect(draw, 0, 0, 64, horizon, (196, 212, 232))
        _rect(draw, 0, horizon, 64, 64, (246, 248, 252))
        for _ in range(rng.randint(2, 4)):
            x = rng.uniform(0, 64)
            tree = [(_s(x), _s(horizon - 9)), (_s(x - 3), _s(horizon)), (_s(x + 3), _s(horizon))]
            draw.polygon(tree, fill=(40, 92, 70))
        for _ in range(18):
            _disc(draw, rng.uniform(0, 64), rng.uniform(0, 64), 0.45, (255, 255, 255))
    elif setting == "night":
        _rect(draw, 0, 0, 64, horizon, (14, 20, 62))
        _rect(draw, 0, horizon, 64, 64, (32, 44, 58))
        for _ in range(16):
            _disc(draw, rng.uniform(0, 64), rng.uniform(0, horizon - 2), 0.45, (255, 255, 230))
        mx, my = rng.uniform(8, 56), rng.uniform(5, 11)
        _disc(draw, mx, my, 4, (250, 244, 196))
        _disc(draw, mx + 1.8, my - 1, 3.4, (14, 20, 62))
    elif setting == "room":
        _rect(draw, 0, 0, 64, horizon, (232, 210, 168))
        _rect(draw, 0, horizon, 64, 64, (152, 100, 58))
        for fy in range(int(horizon) + 5, 64, 6):
            _rect(draw, 0, fy, 64, fy + 0.5, (128, 82, 46))
        wx = rng.uniform(4, 44)
        _rect(draw, wx, 5, wx + 16, 17, (250, 250, 250))
        _rect(draw, wx + 1, 6, wx + 15, 16, (120, 186, 236))
        _rect(draw, wx + 7.5, 6, wx + 8.5, 16, (250, 250, 250))


# --- characters ----------------------------------------------------------------------------------


def _limb(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], width: float, fill: RGB) -> None:
    draw.line([(_s(a[0]), _s(a[1])), (_s(b[0]), _s(b[1]))], fill=fill, width=max(1, _s(width)), joint="curve")
    _disc(draw, a[0], a[1], width / 2, fill)
    _disc(draw, b[0], b[1], width / 2, fill)


def pose_joints(action: str, cx: float, feet: float, h: float) -> dict[str, list]:
    """Joint positions for an action: legs and arms as point chains, plus hip/shoulder heights."""
    if action == "jumping":
        feet -= 0.16 * h
    hip = feet - (0.22 if action == "sitting" else 0.42) * h
    shoulder = hip - 0.32 * h
    sx, lx = 0.15 * h, 0.07 * h  # shoulder and leg offsets from the centre
    hand_down = shoulder + 0.30 * h
    legs = {
        "standing": [[(cx - lx, hip), (cx - lx, feet)], [(cx + lx, hip), (cx + lx, feet)]],
        "waving": [[(cx - lx, hip), (cx - lx, feet)], [(cx + lx, hip), (cx + lx, feet)]],
        "running": [[(cx - lx, hip), (cx - 0.24 * h, feet)], [(cx + lx, hip), (cx + 0.1 * h, hip + 0.2 * h),
                                                               (cx + 0.26 * h, feet - 0.06 * h)]],
        "sitting": [[(cx - lx, hip), (cx + 0.2 * h, hip), (cx + 0.2 * h, feet)],
                    [(cx + lx, hip), (cx + 0.28 * h, hip), (cx + 0.28 * h, feet)]],
        "jumping": [[(cx - lx, hip), (cx - 0.16 * h, hip + 0.2 * h), (cx - 0.12 * h, feet)],
                    [(cx + lx, hip), (cx + 0.16 * h, hip + 0.2 * h), (cx + 0.12 * h, feet)]],
    }[action]
    arms = {
        "standing": [[(cx - sx, shoulder), (cx - sx - 0.04 * h, hand_down)],
                     [(cx + sx, shoulder), (cx + sx + 0.04 * h, hand_down)]],
        "waving": [[(cx - sx, shoulder), (cx - sx - 0.04 * h, hand_down)],
                   [(cx + sx, shoulder), (cx + sx + 0.12 * h, shoulder - 0.08 * h),
                    (cx + sx + 0.16 * h, shoulder - 0.26 * h)]],
        "running": [[(cx - sx, shoulder), (cx - sx - 0.16 * h, shoulder + 0.18 * h)],
                    [(cx + sx, shoulder), (cx + sx + 0.14 * h, shoulder + 0.1 * h), (cx + sx + 0.2 * h, shoulder)]],
        "sitting": [[(cx - sx, shoulder), (cx - sx + 0.02 * h, hand_down)],
                    [(cx + sx, shoulder), (cx + sx + 0.1 * h, hip - 0.02 * h)]],
        "jumping": [[(cx - sx, shoulder), (cx - sx - 0.12 * h, shoulder - 0.24 * h)],
                    [(cx + sx, shoulder), (cx + sx + 0.12 * h, shoulder - 0.24 * h)]],
    }[action]
    return {"legs": legs, "arms": arms, "hip": hip, "shoulder": shoulder, "feet": feet}


def _draw_figure(draw: ImageDraw.ImageDraw, fig: Figure) -> None:
    pose = pose_joints(fig.action, fig.x, fig.ground, fig.height)
    stool = pose["hip"] + 0.11 * fig.height / 2 if fig.action == "sitting" else None  # half a leg below the hip
    draw_posed(draw, fig.look, pose, fig.x, fig.ground, fig.height, stool=stool, shadow=fig.action == "jumping")


def draw_posed(draw: ImageDraw.ImageDraw, look: CharacterLook, pose: dict, cx: float, ground: float, h: float,
               *, stool: float | None = None, shadow: bool = False) -> None:
    """Draw a kid of ``look`` in ``pose`` (from :func:`pose_joints`, or any blend of its joints) centred at
    ``cx``; ``stool`` is the y of a stool's top (None: no stool), ``shadow`` a shadow on the ``ground`` line."""
    hip, shoulder = pose["hip"], pose["shoulder"]
    skin, hair = SKIN_TONES[look.skin], HAIR_COLOURS[look.hair_colour]
    shirt, trousers = SHIRT_COLOURS[look.shirt_colour], TROUSERS_COLOURS[look.trousers]
    r = 0.13 * h  # head radius
    hx, hy = cx, shoulder - r * 0.95
    limb_w, leg_w = 0.085 * h, 0.11 * h

    if stool is not None:  # a stool to sit on
        _rect(draw, cx - 0.14 * h, stool, cx + 0.1 * h, ground, (110, 84, 60))
    if shadow:  # a shadow on the ground
        draw.ellipse((_s(cx - 0.2 * h), _s(ground - 1), _s(cx + 0.2 * h), _s(ground + 1)), fill=(60, 60, 60))
    for chain in pose["legs"]:
        for a, b in zip(chain, chain[1:]):
            _limb(draw, a, b, leg_w, trousers)
        _disc(draw, chain[-1][0], chain[-1][1], leg_w * 0.6, (40, 30, 30))  # shoe
    # torso
    tw = 0.3 * h
    _rect(draw, cx - tw / 2, shoulder, cx + tw / 2, hip + 0.02 * h, shirt)
    if look.shirt_pattern == "striped":
        stripe = 0.05 * h
        y = shoulder + stripe
        while y < hip - stripe * 0.5:
            _rect(draw, cx - tw / 2, y, cx + tw / 2, y + stripe, STRIPE_RGB)
            y += 2 * stripe
    for chain in pose["arms"]:
        for a, b in zip(chain, chain[1:]):
            _limb(draw, a, b, limb_w, shirt)
        _disc(draw, chain[-1][0], chain[-1][1], limb_w * 0.7, skin)  # hand
    if look.hair_style == "long":  # hair falling over the shoulders, drawn behind the head
        _rect(draw, hx - r * 1.3, hy, hx + r * 1.3, shoulder + 0.13 * h, hair)
    # head, hair on top, face
    _disc(draw, hx, hy, r, skin)
    draw.chord((_s(hx - r * 1.05), _s(hy - r * 1.1), _s(hx + r * 1.05), _s(hy + r * 0.9)), 180, 360, fill=hair)
    eye_y, eye_dx = hy + 0.15 * r, 0.42 * r
    if look.glasses:
        for ex in (hx - eye_dx, hx + eye_dx):
            draw.ellipse((_s(ex - 0.36 * r), _s(eye_y - 0.32 * r), _s(ex + 0.36 * r), _s(eye_y + 0.32 * r)),
                         fill=(250, 250, 250), outline=(10, 10, 10), width=max(2, _s(0.16 * r)))
        _rect(draw, hx - 0.1 * r, eye_y - 0.06 * r, hx + 0.1 * r, eye_y + 0.06 * r, (10, 10, 10))
    for ex in (hx - eye_dx, hx + eye_dx):
        _disc(draw, ex, eye_y, 0.13 * r, (10, 10, 10))
    if look.hat:
        _rect(draw, hx - r * 1.45, hy - r * 0.75, hx + r * 1.45, hy - r * 0.45, HAT_RGB)  # brim
        _rect(draw, hx - r * 0.9, hy - r * 1.75, hx + r * 0.9, hy - r * 0.5, HAT_RGB)  # crown
