"""The character bank: what a character's reference panels leave for later panels.

Per character, per patched layer, per denoising step, the bank keeps the sampled
tokens of the reference panels' self-attention inputs (both guidance halves). Later
panels compute keys and values from them with their own layer's projections. The
bank lives on a storage device (host memory when the model runs on a GPU) and is
brought to the compute device one step at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from storyd.errors import InputError

# What a bank must match to be read: the layer shapes and step schedule it was written for.
VALIDITY_KEYS = ("model", "revision", "width", "height", "steps", "scheduler", "cfg", "layers", "read_step", "loras")


@dataclass
class CharacterBank:
    storage_device: torch.device | str = "cpu"
    # character -> (layer, step) -> tensor (halves, tokens, channels)
    entries: dict[str, dict[tuple[str, int], torch.Tensor]] = field(default_factory=dict)
    meta: dict[str, dict] = field(default_factory=dict)

    def write(self, character: str, layer: str, step: int, tokens: torch.Tensor) -> None:
        self.entries.setdefault(character, {})[(layer, step)] = tokens.detach().to(self.storage_device, copy=True)

    def characters(self) -> list[str]:
        return list(self.entries)

    def step_tensors(self, characters: list[str], step: int, device) -> dict[tuple[str, str], torch.Tensor]:
        """Every tensor of `step` for these characters, on `device`, keyed by (character, layer)."""
        out: dict[tuple[str, str], torch.Tensor] = {}
        for character in characters:
            for (layer, s), tensor in self.entries.get(character, {}).items():
                if s == step:
                    out[(character, layer)] = tensor.to(device, non_blocking=True)
        return out

    def forget_before(self, character: str, layer: str, step: int) -> None:
        entries = self.entries.get(character, {})
        for key in [k for k in entries if k[0] == layer and k[1] < step]:
            del entries[key]

    def last_step(self, character: str) -> int | None:
        steps = [s for _, s in self.entries.get(character, {})]
        return max(steps) if steps else None

    def nbytes(self, character: str | None = None) -> int:
        chars = [character] if character else list(self.entries)
        return sum(t.numel() * t.element_size() for c in chars for t in self.entries.get(c, {}).values())

    def save(self, character: str, path: Path) -> None:
        """Write one character's bank as safetensors, with what it is valid for in the metadata."""
        from safetensors.torch import save

        from storyd.fsutil import atomic_write_bytes

        tensors = {f"{layer}@{step}": t.contiguous().cpu() for (layer, step), t in self.entries[character].items()}
        metadata = {"storyd_bank": json.dumps({"character": character, **self.meta.get(character, {})}, sort_keys=True)}
        atomic_write_bytes(path, save(tensors, metadata=metadata))

    def load(self, path: Path) -> str:
        """Read a saved character bank; return the character's name."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                info = json.loads((handle.metadata() or {}).get("storyd_bank", "null") or "null")
                if not isinstance(info, dict) or "character" not in info:
                    raise InputError("not a storyd character bank", "make one with --save-characters", path=path)
                store = {}
                for key in handle.keys():
                    layer, step = key.rsplit("@", 1)
                    store[(layer, int(step))] = handle.get_tensor(key).to(self.storage_device)
        except (OSError, ValueError, SafetensorError) as exc:
            raise InputError(
                f"cannot read character bank: {exc}", "check the file or make it again", path=path
            ) from None
        character = info.pop("character")
        self.entries[character] = store
        self.meta[character] = info
        return character

    def require_valid(self, character: str, expected: dict, path: Path) -> None:
        """Refuse a bank made for another model, size, step count or schedule."""
        meta = self.meta.get(character, {})
        mismatched = [k for k in VALIDITY_KEYS if meta.get(k) != expected.get(k)]
        if mismatched:
            diffs = ", ".join(f"{k} {meta.get(k)!r} (this run: {expected.get(k)!r})" for k in mismatched)
            raise InputError(
                f"the saved bank of '{character}' was made for another setup: {diffs}",
                "regenerate it with --save-characters under the current model, size and steps",
                path=path,
            )
