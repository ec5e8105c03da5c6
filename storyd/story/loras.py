"""`loras:` in a story: at story level (every panel) and under a character (the panels that show them).

A LoRA is a .safetensors file (a path relative to the story's folder) or a name pinned in
weights.lock (kind `lora`), with a weight (default 1.0). This module reads and checks the
entries; `storyd.plan.loras` decides which panels use which, `storyd.render.lora` loads them.
"""

from __future__ import annotations

from pathlib import Path

from yaml.nodes import Node, ScalarNode

from storyd.errors import InputError
from storyd.story.model import Lora
from storyd.story.yaml_nodes import YamlDoc

LORA_KEYS = ("path", "name", "weight")
MAX_WEIGHT = 10.0
SUFFIX = ".safetensors"


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
