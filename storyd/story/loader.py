"""Load a story file (YAML, or the published tool's plain-text format) into a `Story`.

Every problem is one `InputError` that names `file:line:col`, what is wrong and
how to fix it. Nothing here touches a model.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from storyd.errors import InputError, SettingError
from storyd.plan.presets import PRESETS
from storyd.render.schedulers import SCHEDULERS
from storyd.story.loras import parse_loras
from storyd.story.model import (
    CAPTION_POSITIONS,
    CONTROL_KINDS,
    DIALOGUE_KINDS,
    ESCAPE_HINT,
    FITS,
    PAGE_PRESETS,
    SPANS,
    TAG_RE,
    TAIL_HINTS,
    TEMPLATES,
    Character,
    ConsistencySettings,
    DialogueLine,
    LayoutSettings,
    Panel,
    PanelControl,
    Story,
)
from storyd.story.styles import STYLES
from storyd.story.text_format import parse_text_story
from storyd.story.yaml_nodes import YamlDoc, line_of

TOP_KEYS = (
    "title",
    "style",
    "model",
    "seed",
    "size",
    "steps",
    "guidance",
    "scheduler",
    "negative",
    "consistency",
    "characters",
    "panels",
    "layout",
    "loras",
)
PANEL_KEYS = ("prompt", "characters", "caption", "dialogue", "seed", "span", "control")
CHARACTER_KEYS = ("description", "reference", "reference_scale", "loras")
CONTROL_KEYS = ("kind", "image", "strength")
DIALOGUE_KEYS = ("speaker", "text", "kind", "tail")
LENGTH_RE = re.compile(r"^\s*\d+(\.\d+)?\s*(mm|cm|in|pt|px)\s*$")
PAGE_RE = re.compile(r"^\s*\d+(\.\d+)?\s*x\s*\d+(\.\d+)?\s*(mm|cm|in|px)\s*$")
NO_CHARACTER_TAG = "NC"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MIN_IMAGE_SIDE = 64  # px: smaller reference or control images carry too little to steer a panel
MAX_STORY_BYTES = 4 * 1024 * 1024  # a long story is a few kilobytes; this bounds what a wrong path reads


def load_story(path: str | Path) -> Story:
    """Read and validate a story file; `.txt` files use the published plain-text format."""
    path = Path(path)
    try:
        if not path.exists():
            raise InputError(f"no such story file: {path}", "check the path")
        if path.is_dir():
            raise InputError(f"{path} is a folder, not a story file", "name a .yaml or .txt story inside it")
        if not path.is_file():
            raise InputError(f"{path} is not a regular file (a device or a pipe)", "name a .yaml or .txt story file")
        with open(path, "rb") as handle:
            data = handle.read(MAX_STORY_BYTES + 1)
    except OSError as exc:
        raise InputError(f"can't read the story file: {exc.strerror or exc}", "check the path", path=path) from None
    if len(data) > MAX_STORY_BYTES:
        raise InputError(
            f"the story file is larger than {MAX_STORY_BYTES // (1024 * 1024)} MiB", "is this a story?", path=path
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError("the story file is not UTF-8 text", "save it as UTF-8", path=path, line=line) from None
    if path.suffix.lower() == ".txt":
        return parse_text_story(path, text)
    return _parse_yaml_story(path, text)


def _parse_yaml_story(path: Path, text: str) -> Story:
    doc = YamlDoc(path, text)
    if doc.root is None:
        raise InputError("the story file is empty", "see stories/ for examples", path=path, line=1, col=1)
    top = doc.mapping(doc.root, "the story", TOP_KEYS)
    if "panels" not in top:
        raise doc.error(doc.root, "the story has no 'panels:' list", "add a 'panels:' list with one entry per panel")
    fields: dict = {}
    get = top.get
    if "title" in top:
        fields["title"] = doc.string(top["title"][1], "title")
    if "style" in top:
        fields["style"] = doc.string(top["style"][1], "style", choices=STYLES)
    if "model" in top:
        fields["model"] = doc.string(top["model"][1], "model", choices=PRESETS)
    if "seed" in top:
        fields["seed"] = doc.integer(top["seed"][1], "seed", minimum=0, maximum=2**32 - 1)
    if "size" in top:
        fields["width"], fields["height"] = _size(doc, top["size"][1])
    if "steps" in top:
        fields["steps"] = doc.integer(top["steps"][1], "steps", minimum=1, maximum=1000)
    if "guidance" in top:
        fields["guidance"] = doc.number(top["guidance"][1], "guidance", minimum=0, maximum=50)
    if "scheduler" in top:
        fields["scheduler"] = doc.string(top["scheduler"][1], "scheduler", choices=SCHEDULERS)
    if "negative" in top:
        fields["negative"] = doc.string(top["negative"][1], "negative", empty_ok=True)
    if "consistency" in top:
        fields["consistency"], fields["consistency_keys"] = _consistency(doc, top["consistency"][1])
    if "layout" in top:
        fields["layout"] = _layout(doc, top["layout"][1], path.parent)
    if "loras" in top:
        fields["loras"] = parse_loras(doc, top["loras"][1], path.parent, "loras")
    characters = _characters(doc, get("characters", (None, None))[1], path.parent)
    panels = _panels(doc, top["panels"][1], characters)
    story = Story(
        title=fields.pop("title", path.stem.replace("_", " ").replace("-", " ").title()),
        path=path,
        characters=characters,
        panels=panels,
        **fields,
    )
    _check_layout(doc, story, top["layout"][0] if "layout" in top else doc.root)
    return story


def _check_layout(doc: YamlDoc, story: Story, node: Node) -> None:
    """Lay the pages out (no drawing) so that a layout with no room for its panels, or a page too
    large to draw, fails here, at the story's `layout:` line, rather than after the panels are drawn."""
    from storyd.layout.render import check_layout

    aspect = story.width / story.height if story.width and story.height else 1.0
    try:
        check_layout(story, aspect)
    except InputError as exc:
        raise doc.error(node, exc.message, exc.hint) from None


def _size(doc: YamlDoc, node: Node) -> tuple[int, int]:
    value = doc.value(node)
    if isinstance(value, int) and not isinstance(value, bool):
        width = height = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*x\s*\d+\s*", value):
        width, height = (int(v) for v in value.lower().split("x"))
    elif isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value):
        width, height = value
    else:
        raise doc.error(node, "size must be one number, 'WIDTHxHEIGHT' or [WIDTH, HEIGHT]", "e.g. size: 768x768")
    for v in (width, height):
        if v < 64 or v > 4096 or v % 8:
            raise doc.error(node, f"size {width}x{height}: each side must be a multiple of 8 from 64 to 4096")
    return width, height


def _consistency(doc: YamlDoc, node: Node) -> tuple[ConsistencySettings, frozenset[str]]:
    """Reads each value's type here; the bounds are ConsistencySettings' own, reported at the value's line."""
    names = [f.name for f in dataclasses.fields(ConsistencySettings)]
    entries = doc.mapping(node, "consistency", names)
    values: dict = {}
    for key, (_, value) in entries.items():
        what = f"consistency.{key}"
        if key in ("enabled", "random_skip", "uncond_reads"):
            values[key] = doc.boolean(value, what)
        elif key in ("id_panels", "batch_size", "warmup_steps", "skip_switch_step"):
            values[key] = doc.integer(value, what)
        elif key in ("skip_early", "skip_late", "reference_guidance"):
            values[key] = doc.number(value, what)
        elif key == "sampling_rate":
            items = doc.sequence(value, what) if isinstance(value, SequenceNode) else [value]
            values[key] = tuple(doc.number(item, what) for item in items)
        elif key == "layers":
            values[key] = _layers(doc, value)
        else:  # bank_device, read_step
            values[key] = doc.string(value, what)
    try:
        return ConsistencySettings(**values), frozenset(values)
    except SettingError as exc:
        raise doc.error(entries[exc.field][1], exc.message, exc.hint) from None


def _layers(doc: YamlDoc, node: Node) -> str:
    if isinstance(node, SequenceNode):
        levels = [doc.integer(item, "consistency.layers level") for item in node.value]
        if not levels:
            raise doc.error(node, "consistency.layers is an empty list", "name resolution levels, e.g. [0, 1]")
        return "levels:" + ",".join(str(v) for v in sorted(set(levels)))
    return doc.string(node, "consistency.layers")


def _layout(doc: YamlDoc, node: Node, base: Path) -> LayoutSettings:
    names = [f.name for f in dataclasses.fields(LayoutSettings)]
    entries = doc.mapping(node, "layout", names)
    values: dict = {}
    for key, (_, value) in entries.items():
        what = f"layout.{key}"
        if key in ("rows", "columns"):
            values[key] = doc.integer(value, what, minimum=1, maximum=12)
        elif key == "dpi":
            values[key] = doc.integer(value, what, minimum=36, maximum=1200)
        elif key == "seed":
            values[key] = doc.integer(value, what, minimum=0, maximum=2**32 - 1)
        elif key in ("page_numbers", "title_page", "cbz"):
            values[key] = doc.boolean(value, what)
        elif key == "template":
            values[key] = doc.string(value, what, choices=TEMPLATES)
        elif key == "caption_position":
            values[key] = doc.string(value, what, choices=CAPTION_POSITIONS)
        elif key == "fit":
            values[key] = doc.string(value, what, choices=FITS)
        elif key in ("margin", "gutter", "border"):
            text = str(doc.value(value)) if isinstance(value, ScalarNode) else ""
            if text.strip() == "0":
                text = "0px"
            if not LENGTH_RE.match(text):
                raise doc.error(
                    value, f"{what} '{text}' is not a length", "write a number and a unit, e.g. 10mm, 0.5in, 12px"
                )
            values[key] = text.strip()
        elif key == "page":
            text = doc.string(value, what).strip().lower()
            if text not in PAGE_PRESETS and not PAGE_RE.match(text):
                raise doc.error(
                    value,
                    f"{what} '{text}' is not a page size",
                    f"use one of {', '.join(PAGE_PRESETS)}, or WIDTHxHEIGHT with a unit, e.g. 1200x1800px",
                )
            values[key] = text
        elif key in ("border_color", "background"):
            values[key] = _colour(doc, value, what)
        elif key == "font":
            font = _existing_file(doc, value, what, base)
            if font.suffix.lower() not in (".ttf", ".otf", ".ttc"):
                raise doc.error(value, f"{what} {font.name} is not a .ttf or .otf font file")
            values[key] = font
    return LayoutSettings(**values)


def _colour(doc: YamlDoc, node: Node, what: str) -> str:
    from PIL import ImageColor

    text = doc.string(node, what)
    try:
        ImageColor.getrgb(text)
    except ValueError:
        raise doc.error(node, f"{what} '{text}' is not a colour", "use a name like 'black' or '#1a1a1a'") from None
    return text


def _existing_file(doc: YamlDoc, node: Node, what: str, base: Path) -> Path:
    path = Path(doc.string(node, what)).expanduser()
    if not path.is_absolute():
        path = base / path
    try:
        if not path.exists():
            raise doc.error(
                node, f"{what}: no such file {path}", "check the path (relative paths start at the story's folder)"
            )
        if path.is_dir():
            raise doc.error(node, f"{what}: {path} is a folder, not a file", "name a file inside it")
        if not path.is_file():
            raise doc.error(node, f"{what}: {path} is not a regular file (a device or a pipe)", "name a file")
    except OSError as exc:  # e.g. a name too long for the file system
        raise doc.error(node, f"{what}: can't look up {path}: {exc.strerror or exc}", "check the path") from None
    return path


def _characters(doc: YamlDoc, node: Node | None, base: Path) -> dict[str, Character]:
    if node is None or (isinstance(node, ScalarNode) and doc.value(node) is None):
        return {}
    characters: dict[str, Character] = {}
    for name, (key_node, value) in doc.mapping(node, "characters", None).items():
        if not name.strip() or TAG_RE.search(f"[{name}]") is None or name == NO_CHARACTER_TAG:
            raise doc.error(key_node, f"'{name}' cannot be a character name", "use a plain name like Maya")
        if isinstance(value, ScalarNode) and isinstance(doc.value(value), str):
            characters[name] = Character(name, doc.string(value, f"{name}'s description"), line=line_of(key_node))
            continue
        entries = doc.mapping(value, f"character {name}", CHARACTER_KEYS)
        if "description" not in entries:
            raise doc.error(
                value, f"character {name} has no description", "add 'description: ...' saying how they look"
            )
        reference = _reference_images(doc, entries["reference"][1], name, base) if "reference" in entries else ()
        loras = parse_loras(doc, entries["loras"][1], base, f"{name}'s loras") if "loras" in entries else ()
        characters[name] = Character(
            name,
            doc.string(entries["description"][1], f"{name}'s description"),
            reference,
            line=line_of(key_node),
            loras=loras,
            **_reference_scale(doc, entries, name),
        )
    return characters


def _reference_images(doc: YamlDoc, node: Node, name: str, base: Path) -> tuple[Path, ...]:
    """`reference: one.png` or `reference: [one.png, two.png]`: each checked to be a usable image."""
    items = doc.sequence(node, f"{name}'s reference") if isinstance(node, SequenceNode) else [node]
    if not items:
        raise doc.error(node, f"{name}'s reference is an empty list", "name one image or more, or remove the key")
    paths = []
    for item in items:
        path = _existing_file(doc, item, f"{name}'s reference", base)
        _check_image(doc, item, path, f"{name}'s reference", min_side=MIN_IMAGE_SIDE)
        paths.append(path)
    return tuple(paths)


def _reference_scale(doc: YamlDoc, entries: dict, name: str) -> dict:
    if "reference_scale" not in entries:
        return {}
    node = entries["reference_scale"][1]
    if "reference" not in entries:
        raise doc.error(node, f"{name} has a reference_scale but no reference image", "add 'reference: image.png'")
    return {"reference_scale": doc.number(node, f"{name}'s reference_scale", minimum=0, maximum=2)}


def _check_image(doc: YamlDoc, node: Node, path: Path, what: str, *, min_side: int | None = None) -> None:
    from storyd.images import image_size

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise doc.error(node, f"{what} {path.name} is not a PNG, JPEG or WebP image", "use a .png, .jpg or .webp file")
    try:
        size = image_size(path, f"{what} {path.name}")
    except InputError as exc:
        raise doc.error(node, exc.message, exc.hint) from None
    if min_side is not None and min(size) < min_side:
        raise doc.error(
            node,
            f"{what} {path.name} is {size[0]}x{size[1]} px, too small",
            f"use an image at least {min_side} px on each side",
        )


def _panels(doc: YamlDoc, node: Node, characters: dict[str, Character]) -> tuple[Panel, ...]:
    items = doc.sequence(node, "panels")
    if not items:
        raise doc.error(node, "the story has no panels", "add at least one entry under 'panels:'")
    return tuple(_panel(doc, item, i, characters) for i, item in enumerate(items))


def _panel(doc: YamlDoc, node: Node, index: int, characters: dict[str, Character]) -> Panel:
    label = f"panel {index + 1}"
    if isinstance(node, ScalarNode):
        prompt = doc.string(node, f"{label}'s prompt")
        return Panel(index, prompt, infer_characters(doc, node, prompt, characters), line=line_of(node))
    entries = doc.mapping(node, label, PANEL_KEYS)
    if "prompt" not in entries:
        raise doc.error(node, f"{label} has no prompt", "add 'prompt: ...' describing what the panel shows")
    prompt_node = entries["prompt"][1]
    prompt = doc.string(prompt_node, f"{label}'s prompt")
    if "characters" in entries:
        shown = _listed_characters(doc, entries["characters"][1], label, characters)
    else:
        shown = infer_characters(doc, prompt_node, prompt, characters)
    fields: dict = {}
    if "caption" in entries:
        fields["caption"] = doc.string(entries["caption"][1], f"{label}'s caption")
    if "dialogue" in entries:
        lines = doc.sequence(entries["dialogue"][1], f"{label}'s dialogue")
        fields["dialogue"] = tuple(_dialogue(doc, line, label) for line in lines)
    if "seed" in entries:
        fields["seed"] = doc.integer(entries["seed"][1], f"{label}'s seed", minimum=0, maximum=2**32 - 1)
    if "span" in entries:
        fields["span"] = doc.string(entries["span"][1], f"{label}'s span", choices=SPANS)
    if "control" in entries:
        fields["control"] = _control(doc, entries["control"][1], label)
    return Panel(index, prompt, shown, line=line_of(node), **fields)


def _control(doc: YamlDoc, node: Node, label: str) -> PanelControl:
    """`control: {kind: pose|canny|depth, image: path, strength: 0..2}`; the image is used as given."""
    what = f"{label}'s control"
    entries = doc.mapping(node, what, CONTROL_KEYS)
    for required in ("kind", "image"):
        if required not in entries:
            example = "kind: pose" if required == "kind" else "image: poses/jump.png"
            raise doc.error(node, f"{what} has no {required}", f"add '{example}'")
    kind = doc.string(entries["kind"][1], f"{what} kind", choices=CONTROL_KINDS)
    image_node = entries["image"][1]
    image = _existing_file(doc, image_node, f"{what} image", doc.path.parent)
    _check_image(doc, image_node, image, f"{what} image", min_side=MIN_IMAGE_SIDE)
    strength = 1.0
    if "strength" in entries:
        strength = doc.number(entries["strength"][1], f"{what} strength", minimum=0, maximum=2)
    return PanelControl(kind, image, strength)


def _listed_characters(doc: YamlDoc, node: Node, label: str, characters: dict[str, Character]) -> tuple[str, ...]:
    items = doc.sequence(node, f"{label}'s characters") if not isinstance(node, ScalarNode) else [node]
    names: list[str] = []
    for item in items:
        name = doc.string(item, f"{label}'s character")
        if name not in characters:
            raise doc.error(item, f"{label} shows '{name}', who is not defined under 'characters:'", _define_hint(name))
        if name not in names:
            names.append(name)
    return tuple(names)


def infer_characters(doc: YamlDoc, node: Node, prompt: str, characters: dict[str, Character]) -> tuple[str, ...]:
    """Who a prompt shows: its [Name] tags, else the defined names it mentions as words."""
    tags = TAG_RE.findall(prompt)
    if tags:
        names = [t.strip() for t in tags if t.strip() != NO_CHARACTER_TAG]
        for name in names:
            if name not in characters:
                raise doc.error(
                    node,
                    f"the prompt names [{name}], who is not defined under 'characters:'",
                    f"{_define_hint(name)}; {ESCAPE_HINT} ('\\\\[' inside double quotes)",
                )
        return tuple(dict.fromkeys(names))
    found = [(m.start(), name) for name in characters for m in [re.search(rf"\b{re.escape(name)}\b", prompt)] if m]
    return tuple(name for _, name in sorted(found))


def _define_hint(name: str) -> str:
    return f"add '{name}: <how they look>' under 'characters:', or fix the spelling"


def _dialogue(doc: YamlDoc, node: Node, label: str) -> DialogueLine:
    what = f"{label}'s dialogue line"
    if isinstance(node, MappingNode) and len(node.value) == 1:
        key = doc.value(node.value[0][0])
        if isinstance(key, str) and key not in DIALOGUE_KEYS:  # shorthand: `- Maya: "Hello!"`
            return DialogueLine(key, doc.string(node.value[0][1], what))
    entries = doc.mapping(node, what, DIALOGUE_KEYS)
    for required in ("speaker", "text"):
        if required not in entries:
            raise doc.error(
                node, f"{what} has no {required}", "write it as 'speaker: Name' and 'text: ...', or '- Name: text'"
            )
    fields = {
        "speaker": doc.string(entries["speaker"][1], f"{what}'s speaker"),
        "text": doc.string(entries["text"][1], f"{what}'s text"),
    }
    if "kind" in entries:
        fields["kind"] = doc.string(entries["kind"][1], f"{what}'s kind", choices=DIALOGUE_KINDS)
    if "tail" in entries:
        fields["tail"] = doc.string(entries["tail"][1], f"{what}'s tail", choices=TAIL_HINTS)
    return DialogueLine(**fields)
