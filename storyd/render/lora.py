"""LoRAs while drawing: the generator loads every LoRA the plan uses as a diffusers adapter
(peft backend) before drawing, sets the adapters per batch, and unloads them afterwards,
leaving a pipeline that is cached across stories as it was.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from storyd.errors import InputError
from storyd.plan.loras import LoraUse, PanelLoras
from storyd.story.model import Story


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
