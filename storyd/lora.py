"""LoRAs: `loras:` at story level (every panel) and under a character (the panels that show them).

A LoRA is a .safetensors file (a path relative to the story's folder) or a name pinned in
weights.lock (kind `lora`), with a weight (default 1.0). Each panel is drawn with the story's
LoRAs plus those of every character it shows (a panel showing two characters activates the
union; the same file twice adds its weights). Panels with different LoRA sets are never drawn
in one batch, so a panel's pixels depend only on its own inputs, as on resume.

The generator loads every LoRA the plan uses as a diffusers adapter (peft backend) before
drawing, sets the adapters per batch, and unloads them afterwards, leaving a pipeline that is
cached across stories as it was.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import Node, ScalarNode

from storyd.errors import InputError
from storyd.story import Lora, Story
from storyd.yaml_nodes import YamlDoc

LORA_KEYS = ("path", "name", "weight")
MAX_WEIGHT = 10.0
SUFFIX = ".safetensors"

PanelLoras = tuple[tuple[str, float], ...]  # (key, weight) pairs, sorted by key, no zero weights


# --- reading the story ---------------------------------------------------------------------------


def parse_loras(doc: YamlDoc, node: Node, base: Path, what: str) -> tuple[Lora, ...]:
    """A `loras:` list: each entry `path: FILE` or `name: PINNED`, with an optional `weight:`."""
    loras: list[Lora] = []
    for item in doc.sequence(node, what):
        lora = _parse_entry(doc, item, base, what)
        if any((other.path, other.name) == (lora.path, lora.name) for other in loras):
            raise doc.error(item, f"{lora.source} appears twice in {what}", "keep one entry, with the weight you want")
        loras.append(lora)
    return tuple(loras)


def _parse_entry(doc: YamlDoc, node: Node, base: Path, what: str) -> Lora:
    form = "write each LoRA as '- path: FILE.safetensors' or '- name: NAME' (from weights.lock), with 'weight: 0.8'"
    if isinstance(node, ScalarNode):
        raise doc.error(node, f"each entry of {what} must be a mapping, not {doc.type_name(node)}", form)
    entries = doc.mapping(node, f"an entry of {what}", LORA_KEYS)
    if ("path" in entries) == ("name" in entries):
        raise doc.error(node, f"an entry of {what} needs exactly one of 'path:' and 'name:'", form)
    weight = 1.0
    if "weight" in entries:
        value = entries["weight"][1]
        try:
            weight = doc.number(value, f"{what} weight", minimum=-MAX_WEIGHT, maximum=MAX_WEIGHT)
        except InputError as exc:
            fix = f"a LoRA's weight is a number from {-MAX_WEIGHT:g} to {MAX_WEIGHT:g}: 1 is full strength, 0 is off"
            raise doc.error(value, exc.message, fix) from None
    where = dict(weight=weight, line=node.start_mark.line + 1, col=node.start_mark.column + 1)
    if "path" in entries:
        value = entries["path"][1]
        text = doc.string(value, f"{what} path")
        return Lora(text, path=_lora_file(doc, value, text, base), **where)
    value = entries["name"][1]
    name = doc.string(value, f"{what} name")
    _pinned_entry(doc, value, name)
    return Lora(name, name=name, **where)


def _lora_file(doc: YamlDoc, node: Node, text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise doc.error(node, f"no LoRA file {path}", "check the path (relative paths start at the story's folder)")
    if path.suffix.lower() != SUFFIX:
        raise doc.error(
            node,
            f"{path.name} is not a .safetensors file",
            "storyd reads LoRAs from .safetensors files only; use the .safetensors release of this LoRA",
        )
    keys = _tensor_names(path)
    if keys is None:
        raise doc.error(node, f"{path.name} is not a readable safetensors file", "download it again")
    if not any("lora" in key.lower() for key in keys):
        raise doc.error(
            node, f"{path.name} is not a LoRA (none of its {len(keys)} tensors is a LoRA weight)", "check the file"
        )
    return path


def _tensor_names(path: Path) -> list[str] | None:
    """The tensor names in a safetensors file's header (no tensor is read), or None if it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception:  # safetensors raises its own error types for a bad header
        return None


def _pinned_entry(doc: YamlDoc, node: Node, name: str):
    from storyd.weights import load_lock
    from storyd.weights.lock import did_you_mean

    lock = load_lock()
    entry = lock.entries.get(name)
    if entry is None:
        pinned = [n for n, e in lock.entries.items() if e.kind == "lora"]
        known = f"pinned LoRAs: {', '.join(sorted(pinned))}" if pinned else "weights.lock pins no LoRA yet"
        raise doc.error(
            node,
            f"no LoRA named '{name}' in {lock.path.name}",
            did_you_mean(name, pinned) + f"{known}; add it there, or give 'path:' to a .safetensors file",
        )
    if entry.kind != "lora":
        raise doc.error(node, f"'{name}' in {lock.path.name} is a {entry.kind} model, not a LoRA", "name a LoRA")
    if not (entry.single_file and entry.files[0].path.lower().endswith(SUFFIX)):
        raise doc.error(
            node, f"LoRA '{name}' in {lock.path.name} must be one .safetensors file", "fix its entry in the lock"
        )
    return entry


# --- planning ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraUse:
    """One LoRA as a plan uses it."""

    lora: Lora
    key: str  # what identifies its weights: the file's sha256, or NAME@REVISION for an unpinned lock entry
    sha256: str | None
    character: str | None  # None: the story's, for every panel

    @property
    def adapter(self) -> str:
        return "storyd_" + re.sub(r"\W", "_", self.key)[:24]

    def record(self) -> dict:
        """What the manifest keeps."""
        return {
            "character": self.character,
            "path": str(self.lora.path.resolve()) if self.lora.path else None,
            "name": self.lora.name,
            "sha256": self.sha256,
            "weight": self.lora.weight,
        }


def panel_lora_set(uses: tuple[LoraUse, ...], characters: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """The (key, weight) set of a panel showing ``characters``: the story's LoRAs and theirs."""
    weights: dict[str, float] = {}
    for use in uses:
        if use.character is None or use.character in characters:
            weights[use.key] = weights.get(use.key, 0.0) + use.lora.weight
    return tuple(sorted((k, w) for k, w in weights.items() if w != 0))


def character_loras(uses: tuple[LoraUse, ...], character: str) -> tuple[tuple[str, float], ...]:
    """What a character's bank is drawn under: the set of a panel showing only that character."""
    return panel_lora_set(uses, (character,))


def plan_loras(story: Story, family: str, model: str) -> tuple[tuple[LoraUse, ...], list[PanelLoras]]:
    """The LoRAs the story uses (story-level, then each shown character's), and each panel's set."""
    shown = {name for panel in story.panels for name in panel.characters}
    wanted = [(lora, None) for lora in story.loras]
    wanted += [(lora, name) for name, c in story.characters.items() if name in shown for lora in c.loras]
    uses = tuple(_use(story, lora, character, family, model) for lora, character in wanted)
    return uses, [panel_lora_set(uses, panel.characters) for panel in story.panels]


def _use(story: Story, lora: Lora, character: str | None, family: str, model: str) -> LoraUse:
    from storyd.fsutil import file_sha256

    if lora.path is not None:
        sha = file_sha256(lora.path)
        return LoraUse(lora, sha, sha, character)
    from storyd.weights import load_lock

    entry = load_lock().get(lora.name)
    if entry.family != family:
        raise InputError(
            f"LoRA '{lora.name}' is for {entry.family} models; model '{model}' is {family}",
            f"use a LoRA made for {family}, or another model",
            path=story.path,
            line=lora.line,
            col=lora.col,
        )
    sha = entry.files[0].sha256
    return LoraUse(lora, sha or f"{entry.name}@{entry.revision or 'unpinned'}", sha, character)


# --- drawing -------------------------------------------------------------------------------------


class LoraSwitch:
    """Turns the loaded adapters on and off per batch."""

    def __init__(self, pipe, adapters: dict[str, str]) -> None:
        self.pipe = pipe
        self.adapters = adapters  # key -> adapter name

    def activate(self, loras: PanelLoras) -> None:
        if not self.adapters:
            return
        if not loras:
            self.pipe.disable_lora()
            return
        self.pipe.enable_lora()
        self.pipe.set_adapters([self.adapters[k] for k, _ in loras], adapter_weights=[w for _, w in loras])


@contextlib.contextmanager
def applied_loras(pipe, uses: tuple[LoraUse, ...], story: Story, model: str, weights_dir: Path | None = None):
    """Load `uses` into `pipe` as adapters; yield a `LoraSwitch`; unload them on the way out."""
    if not uses:
        yield LoraSwitch(pipe, {})
        return
    before = {name for names in pipe.get_list_adapters().values() for name in names}
    loaded: dict[str, str] = {}
    try:
        for use in uses:
            if use.key not in loaded:
                _load(pipe, use, story, model, weights_dir)
                loaded[use.key] = use.adapter
        yield LoraSwitch(pipe, loaded)
    finally:
        _unload(pipe, before)


def _load(pipe, use: LoraUse, story: Story, model: str, weights_dir: Path | None) -> None:
    from safetensors.torch import load_file

    path = use.lora.path
    if path is None:
        from storyd.weights import load_lock, resolve

        path = resolve(load_lock().get(use.lora.name), weights_dir)
    problem = None
    try:
        with _quiet():
            pipe.load_lora_weights(load_file(str(path)), adapter_name=use.adapter)
    except Exception as exc:  # diffusers and peft raise ValueError, RuntimeError, KeyError, their own errors
        problem = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:240]
    if problem is None and use.adapter not in {a for names in pipe.get_list_adapters().values() for a in names}:
        problem = "no layer of the model took its weights"
    if problem is not None:
        raise InputError(
            f"{use.lora.source} is not a LoRA for model '{model}' ({problem})",
            "use a LoRA trained for this model family, or remove it from the story",
            path=story.path,
            line=use.lora.line,
            col=use.lora.col,
        )


def _unload(pipe, before: set[str]) -> None:
    """Remove every adapter storyd added (and, when there were none before, peft's wrappers too)."""
    with _quiet():
        if not before:
            pipe.unload_lora_weights()
            return
        ours = {name for names in pipe.get_list_adapters().values() for name in names} - before
        if ours:
            pipe.delete_adapters(sorted(ours))
        pipe.enable_lora()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """diffusers logs a warning per text encoder without LoRA weights; storyd reports problems itself."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.set_verbosity(level)
