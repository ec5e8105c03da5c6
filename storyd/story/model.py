"""The story model: typed, frozen records of what a story file says.

`load_story` (in `storyd.story.loader`) builds these from YAML or the published
plain-text format; everything else in storyd reads only these records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from storyd.errors import SettingError

DIALOGUE_KINDS = ("speech", "thought", "shout", "whisper")
TAIL_HINTS = ("auto", "left", "right")
SPANS = ("normal", "wide", "tall", "large")
TEMPLATES = ("auto", "grid", "classic", "strip", "manga")
PAGE_PRESETS = ("a4", "letter", "comic", "square")
CAPTION_POSITIONS = ("top", "bottom")
FITS = ("cover", "contain")
LAYER_SETS = ("up", "all", "down", "mid")
READ_STEPS = ("same", "last")
CONTROL_KINDS = ("pose", "canny", "depth")  # a panel's `control: kind:` (storyd.render.control)

# A character tag `[Name]` in a prompt; `\[...]` is an escaped bracket, plain punctuation for the model.
TAG_RE = re.compile(r"(?<!\\)\[([^\[\]]+)\]")
ESCAPE_HINT = "if the brackets are plain punctuation, escape them with a backslash: \\[like this]"


def unescape_brackets(text: str) -> str:
    """The prompt as the model reads it: escaped brackets become plain ones."""
    return text.replace("\\[", "[").replace("\\]", "]")


@dataclass(frozen=True)
class DialogueLine:
    speaker: str
    text: str
    kind: str = "speech"  # one of DIALOGUE_KINDS
    tail: str = "auto"  # one of TAIL_HINTS: which side of the panel the speaker stands


@dataclass(frozen=True)
class Panel:
    index: int  # 0-based position in the story
    prompt: str  # as written, with character names or [Name] tags
    characters: tuple[str, ...]  # who is shown, in the order written
    caption: str | None = None
    dialogue: tuple[DialogueLine, ...] = ()
    seed: int | None = None  # None: derived from the story seed and the index
    span: str = "normal"  # one of SPANS: a layout hint
    line: int = 0  # where the panel starts in the story file (1-based), for messages
    control: PanelControl | None = None  # pose / edges / depth to follow (storyd.render.control)


@dataclass(frozen=True)
class PanelControl:
    """A panel's ControlNet input: an image that already is a pose skeleton, edge map or depth map."""

    kind: str  # one of CONTROL_KINDS
    image: Path  # resolved against the story's folder
    strength: float = 1.0  # ControlNet conditioning scale, 0 to 2


@dataclass(frozen=True)
class Lora:
    """A LoRA named in a story (`storyd.story.loras`): a .safetensors file, or a name pinned in weights.lock."""

    source: str  # as written: the path, or the pinned name
    path: Path | None = None  # the file, resolved against the story's folder; None for a pinned name
    name: str | None = None  # the weights.lock name; None for a file
    weight: float = 1.0
    line: int = 0  # where the entry is in the story file, for errors at load time
    col: int = 0


@dataclass(frozen=True)
class Character:
    name: str
    description: str
    references: tuple[Path, ...] = ()  # images of the character (IP-Adapter, storyd.render.reference), resolved
    line: int = 0
    reference_scale: float = 0.6  # IP-Adapter scale for the panels this character steers; 0 turns it off
    loras: tuple[Lora, ...] = ()  # active for the panels that show this character


@dataclass(frozen=True)
class ConsistencySettings:
    """Consistent Self-Attention knobs; defaults are the published ones."""

    enabled: bool = True
    id_panels: int = 2  # reference panels per character, drawn together in write mode
    layers: str = "up"  # one of LAYER_SETS, or "levels:0,1" for resolution levels
    sampling_rate: tuple[float, ...] = (0.5, 0.5)  # per resolution level, coarsest first; the last repeats
    warmup_steps: int = 1
    random_skip: bool = True
    skip_early: float = 0.3  # probability a layer call skips CSA before `skip_switch_step`
    skip_late: float = 0.1
    skip_switch_step: int = 20
    batch_size: int = 4  # read-mode panels per batch
    # Which bank step a read-mode panel attends to at each of its own steps: the same step
    # (published), or the references' last step, their finished look, at every step (the
    # toy model's default; its bank then keeps one step, not all of them).
    read_step: str = "same"
    # Whether a read-mode panel's unconditional (guidance) half reads the bank too, as
    # published. Off, only the conditional half does, so guidance amplifies what the panel
    # copies from its references instead of cancelling it.
    uncond_reads: bool = True
    # Guidance for reference (write-mode) panels; None: the story's. A reference drawn more
    # decisively than the panels that copy it leaves less ambiguity to copy (the toy model's 7).
    reference_guidance: float | None = None
    # Where the character banks rest: auto (the device if they fit its free memory, else host memory
    # if they fit the host budget, else disk), device, host, disk, or a device by name (cpu is host).
    bank_device: str = "auto"

    def __post_init__(self) -> None:
        """Checks every field against its bounds (the one place they live); numbers become floats
        and `sampling_rate` a tuple, so equal settings hash alike whoever built them."""
        for name in ("enabled", "random_skip", "uncond_reads"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(name, _shown(getattr(self, name)), "must be true or false")
        for name, (low, high) in WHOLE_BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SettingError(name, _shown(value), "must be a whole number")
            if not low <= value <= high:
                raise SettingError(name, _shown(value), "is out of range", f"use a whole number from {low} to {high}")
        for name in ("skip_early", "skip_late"):
            object.__setattr__(self, name, _fraction(name, getattr(self, name)))
        rates = self.sampling_rate if isinstance(self.sampling_rate, (tuple, list)) else (self.sampling_rate,)
        if not rates:
            raise SettingError("sampling_rate", "[]", "is empty", "give one rate, or one per resolution level")
        object.__setattr__(self, "sampling_rate", tuple(_fraction("sampling_rate", r) for r in rates))
        _check_layers(self.layers)
        if self.read_step not in READ_STEPS:
            raise SettingError("read_step", _shown(self.read_step), "is not one of the known values",
                               f"use one of: {', '.join(READ_STEPS)}")
        if self.reference_guidance is not None:
            guidance = _number("reference_guidance", self.reference_guidance)
            if not 1 < guidance <= 50:  # at 1 the pipeline drops its unconditional half, which readers need
                raise SettingError("reference_guidance", _shown(guidance), "is out of range",
                                   "use a value above 1, up to 50")
            object.__setattr__(self, "reference_guidance", guidance)
        if self.bank_device not in BANK_DEVICES and not re.fullmatch(r"cuda:\d+", str(self.bank_device)):
            raise SettingError("bank_device", _shown(self.bank_device), "is not a bank placement",
                               f"use one of: {', '.join(BANK_DEVICES)}, or cuda:N")

    def guidance_for_references(self, guidance: float) -> float:
        """The guidance reference (write-mode) panels are drawn at, given the story's; above 1, their
        bank holds both guidance halves."""
        return guidance if self.reference_guidance is None else self.reference_guidance


BANK_DEVICES = ("auto", "device", "host", "disk", "cpu", "cuda", "mps")
WHOLE_BOUNDS = {"id_panels": (1, 64), "batch_size": (1, 64), "warmup_steps": (0, 1000), "skip_switch_step": (0, 1000)}
MAX_LEVEL = 8  # the deepest resolution level `layers: levels:...` may name


def _shown(value: object) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(name: str, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SettingError(name, _shown(value), "must be a number")
    return float(value)


def _fraction(name: str, value: object) -> float:
    number = _number(name, value)
    if not 0 <= number <= 1:
        raise SettingError(name, _shown(number), "is out of range", "use values from 0 to 1")
    return number


def _check_layers(layers: object) -> None:
    if layers in LAYER_SETS:
        return
    text = layers if isinstance(layers, str) else ""
    levels = text[len("levels:"):].split(",") if text.startswith("levels:") else []
    if not levels or not all(v.isdigit() and int(v) <= MAX_LEVEL for v in levels):
        raise SettingError("layers", _shown(layers), "is not a layer set",
                           f"use one of {', '.join(LAYER_SETS)}, or levels:0,1 (levels 0 to {MAX_LEVEL})")


@dataclass(frozen=True)
class LayoutSettings:
    """Page layout; lengths are strings with a unit (mm, cm, in, pt, px)."""

    template: str = "auto"  # one of TEMPLATES
    rows: int | None = None
    columns: int | None = None
    page: str = "a4"  # one of PAGE_PRESETS, or "WIDTHxHEIGHT" with a unit, e.g. "1200x1800px", "6x9in"
    dpi: int = 150
    margin: str = "10mm"
    gutter: str = "4mm"
    border: str = "1pt"
    border_color: str = "black"
    background: str = "white"
    page_numbers: bool = False
    title_page: bool = False
    font: Path | None = None  # a .ttf/.otf; None: the packaged comic-lettering font
    caption_position: str = "top"  # one of CAPTION_POSITIONS
    fit: str = "cover"  # one of FITS
    cbz: bool = False
    seed: int | None = None  # for the `classic` template's row choices; None: the story seed


@dataclass(frozen=True)
class Story:
    title: str
    path: Path  # the story file
    characters: dict[str, Character]
    panels: tuple[Panel, ...]
    style: str = "none"
    model: str | None = None  # preset name; None: the embedded default
    seed: int = 0
    width: int | None = None  # None: the model's default size
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None  # a storyd scheduler name; None: the model's own
    negative: str = ""
    consistency: ConsistencySettings = field(default_factory=ConsistencySettings)
    consistency_keys: frozenset[str] = frozenset()  # the settings the story names; the model gives the rest
    layout: LayoutSettings = field(default_factory=LayoutSettings)
    loras: tuple[Lora, ...] = ()  # active for every panel

    @property
    def name(self) -> str:
        """A file-system-safe name, from the file name: `out/<name>/` by default."""
        return self.path.stem
