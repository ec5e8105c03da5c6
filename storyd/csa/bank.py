"""The character bank: what a character's reference panels leave for later panels.

Per character, per patched layer, per denoising step, the bank keeps the sampled
tokens of the reference panels' self-attention inputs (both guidance halves). Later
panels compute keys and values from them with their own layer's projections.

Where the tensors rest is the bank's `storage_device`: the compute device, host memory
(`cpu`), or `disk`. On disk, each finished step of a character is one safetensors file
in a spill folder of the bank's own (removed by `close`); at most one step per character
is held while it is written, and a read step is loaded while the step before it runs.
Disk and memory give the same tensors bit for bit: safetensors stores them as they are.
Every placement brings one step at a time to the compute device (`step_tensors`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from storyd.errors import InputError
from storyd.fsutil import spill_prefix
from storyd.streamed_safetensors import tensor_bytes, write_streamed

# What a bank must match to be read: the layer shapes and step schedule it was written for.
VALIDITY_KEYS = ("model", "revision", "width", "height", "steps", "scheduler", "cfg", "layers", "read_step", "loras")
DISK = "disk"


@dataclass
class CharacterBank:
    storage_device: torch.device | str = "cpu"  # a torch device, or "disk"
    spill_dir: Path | None = None  # where a disk bank makes its spill folder (default: the system's temp folder)
    # character -> (layer, step) -> tensor (halves, tokens, channels): every entry in memory; on disk only
    # the step being written
    entries: dict[str, dict[tuple[str, int], torch.Tensor]] = field(default_factory=dict)
    meta: dict[str, dict] = field(default_factory=dict)
    # disk only: character -> step -> layer -> (dtype, shape), for every step written to a file
    _spilled: dict[str, dict[int, dict[str, tuple[torch.dtype, tuple[int, ...]]]]] = field(
        default_factory=dict, repr=False
    )
    _folder: Path | None = field(default=None, repr=False)
    _numbers: dict[str, int] = field(default_factory=dict, repr=False)  # character -> its files' number
    _io: ThreadPoolExecutor | None = field(default=None, repr=False)  # one worker: reads and writes keep their order
    _writing: Future | None = field(default=None, repr=False)  # the step file being written
    _ahead: tuple[tuple, Future] | None = field(default=None, repr=False)  # the step read while the one before runs
    _cleanup: weakref.finalize | None = field(default=None, repr=False)

    @property
    def on_disk(self) -> bool:
        return str(self.storage_device) == DISK

    def write(self, character: str, layer: str, step: int, tokens: torch.Tensor) -> None:
        if not self.on_disk:
            self.entries.setdefault(character, {})[(layer, step)] = tokens.detach().to(self.storage_device, copy=True)
            return
        held = self.entries.setdefault(character, {})
        if held and next(iter(held))[1] != step:  # the step before is finished: to its file
            self._spill(character)
        held[(layer, step)] = tokens.detach().to("cpu", copy=True)

    def characters(self) -> list[str]:
        return list(dict.fromkeys([*self.entries, *self._spilled]))

    def step_tensors(self, characters: list[str], step: int, device) -> dict[tuple[str, str], torch.Tensor]:
        """Every tensor of `step` for these characters, on `device`, keyed by (character, layer).
        A disk bank starts reading `step + 1` as it returns."""
        if not self.on_disk:
            return self._held(characters, step, device)
        self.flush()
        key = (tuple(characters), step)
        ahead, self._ahead = self._ahead, None
        found = ahead[1].result() if ahead is not None and ahead[0] == key else self._read(characters, step)
        if any(step + 1 in self._spilled.get(c, {}) for c in characters):
            self._ahead = ((tuple(characters), step + 1), self._pool().submit(self._read, characters, step + 1))
        return {k: t.to(device, non_blocking=True) for k, t in found.items()}

    def _held(self, characters: list[str], step: int, device) -> dict[tuple[str, str], torch.Tensor]:
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
        for s, layers in list(self._spilled.get(character, {}).items()):
            if s < step and layers.pop(layer, None) is not None and not layers:
                self._wait_writes()
                del self._spilled[character][s]
                self._path(character, s).unlink(missing_ok=True)

    def last_step(self, character: str) -> int | None:
        steps = [s for _, s in self.entries.get(character, {})] + list(self._spilled.get(character, {}))
        return max(steps) if steps else None

    def nbytes(self, character: str | None = None) -> int:
        chars = [character] if character else self.characters()
        held = sum(t.numel() * t.element_size() for c in chars for t in self.entries.get(c, {}).values())
        return held + sum(
            tensor_bytes(dtype, shape) for c in chars for layers in self._spilled.get(c, {}).values()
            for dtype, shape in layers.values()
        )

    def flush(self) -> None:
        """Write every held step of a disk bank to its file, and wait for the writes (a memory bank
        holds nothing back)."""
        if self.on_disk:
            for character in [c for c, held in self.entries.items() if held]:
                self._spill(character)
            self._wait_writes()

    def close(self) -> None:
        """End a disk bank's reading and writing and remove its spill folder; the bank is then empty."""
        if self._io is not None:
            self._io.shutdown(wait=True, cancel_futures=True)
            self._io = self._writing = self._ahead = None
        if self._cleanup is not None:
            self._cleanup()
        self._spilled.clear()
        if self.on_disk:
            self.entries.clear()

    def __enter__(self) -> CharacterBank:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pool(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storyd-bank")
        return self._io

    def _path(self, character: str, step: int) -> Path:
        if self._folder is None:
            if self.spill_dir is not None:
                Path(self.spill_dir).mkdir(parents=True, exist_ok=True)
            self._folder = Path(tempfile.mkdtemp(prefix=spill_prefix(), dir=self.spill_dir))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        number = self._numbers.setdefault(character, len(self._numbers))  # a name may hold any character
        return self._folder / f"{number}-{step}.safetensors"

    def _spill(self, character: str) -> None:
        """One held step of `character` to its file, written while the next step is drawn; the write
        before it must be done first, so at most two steps are in host memory."""
        held = self.entries[character]
        if not held:
            return
        step = next(iter(held))[1]
        index = {layer: (t.dtype, tuple(t.shape)) for (layer, _), t in held.items()}
        tensors = list(held.values())
        path = self._path(character, step)
        self._wait_writes()
        self._writing = self._pool().submit(write_streamed, path, {}, index, tensors)
        self._spilled.setdefault(character, {}).setdefault(step, {}).update(index)
        held.clear()

    def _wait_writes(self) -> None:
        """Wait for the step file being written: a failed write (a full disk) is raised here, in the
        drawing thread, as the one-line error `atomic_open` makes of it."""
        if self._writing is not None:
            future, self._writing = self._writing, None
            future.result()

    def _read(self, characters: list[str] | tuple[str, ...], step: int) -> dict[tuple[str, str], torch.Tensor]:
        from safetensors.torch import load_file

        out: dict[tuple[str, str], torch.Tensor] = {}
        for character in characters:
            if step in self._spilled.get(character, {}):
                for layer, tensor in load_file(str(self._path(character, step))).items():
                    out[(character, layer)] = tensor
        return out

    def _steps(self, character: str):
        """(layer, step, tensor) of every entry of `character`, a step at a time from a (flushed) disk bank."""
        if not self.on_disk:
            for (layer, step), tensor in self.entries[character].items():
                yield layer, step, tensor
            return
        for step, layers in sorted(self._spilled.get(character, {}).items()):
            found = self._read([character], step)
            for layer in layers:  # in the index's order, which `save` writes the header in
                yield layer, step, found[(character, layer)]

    def save(self, character: str, path: Path) -> None:
        """Write one character's bank as safetensors, with what it is valid for in the metadata.
        A disk bank's steps are copied one at a time: the whole bank is never in memory."""
        from storyd.fsutil import atomic_write_bytes

        metadata = {"storyd_bank": json.dumps({"character": character, **self.meta.get(character, {})}, sort_keys=True)}
        if not self.on_disk:
            from safetensors.torch import save

            tensors = {f"{layer}@{step}": t.contiguous().cpu() for layer, step, t in self._steps(character)}
            atomic_write_bytes(path, save(tensors, metadata=metadata))
            return
        self.flush()
        index = {f"{layer}@{step}": kind for step, layers in sorted(self._spilled.get(character, {}).items())
                 for layer, kind in layers.items()}
        write_streamed(path, metadata, index, (t for _, _, t in self._steps(character)))

    def load(self, path: Path) -> str:
        """Read a saved character bank, a step at a time; return the character's name."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                character = bank_name(handle.metadata(), path)
                info = json.loads(handle.metadata()["storyd_bank"])
                keys: dict[int, list[tuple[str, str]]] = {}
                for key in handle.keys():
                    layer, step = key.rsplit("@", 1)
                    keys.setdefault(int(step), []).append((layer, key))
                self.entries.pop(character, None)
                self._spilled.pop(character, None)
                for step in sorted(keys):
                    for layer, key in keys[step]:
                        self.write(character, layer, step, handle.get_tensor(key))
                self.flush()
        except (OSError, ValueError, SafetensorError) as exc:
            raise InputError(
                f"cannot read character bank: {exc}", "check the file or make it again", path=path
            ) from None
        info.pop("character")
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


def bank_name(metadata: dict | None, path: Path) -> str:
    """The character a saved bank's safetensors metadata names; InputError if it is not a storyd bank."""
    try:
        info = json.loads((metadata or {}).get("storyd_bank", "null") or "null")
    except ValueError:
        info = None
    if not isinstance(info, dict) or "character" not in info:
        raise InputError("not a storyd character bank", "make one with --save-characters", path=path)
    return info["character"]


def read_bank_name(path: Path) -> str:
    """The character a saved bank file is of, from its header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return bank_name(handle.metadata(), path)
    except (OSError, ValueError, SafetensorError) as exc:
        raise InputError(f"cannot read character bank: {exc}", "check the file or make it again", path=path) from None
