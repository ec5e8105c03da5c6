"""What steers a panel besides its prompt: reference images (storyd.render.reference, IP-Adapter) and
pose/edge/depth control (storyd.render.control, ControlNet). One entry point for the generator,
the output folder's input hashes, the plan's warnings and the weights check."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storyd.render import control, reference


def hash_inputs(plan, job) -> dict:
    """The conditioning inputs that decide a panel's pixels; empty for a panel with none, so the
    hashes of stories without references or control are what they were."""
    return {**reference.hash_inputs(plan, job), **control.hash_inputs(plan, job)}


def conditioning_warnings(plan) -> list[str]:
    return reference.reference_warnings(plan) + control.control_warnings(plan)


def required_weights(plan) -> list[str]:
    return reference.required_weights(plan) + control.required_weights(plan)


def check_weights(plan, weights_dir: Path | None = None) -> None:
    """Raise WeightsError (naming the pull command) for a missing adapter or ControlNet, before any model loads."""
    from storyd.weights import load_lock, resolve

    lock = load_lock()
    for name in required_weights(plan):
        resolve(lock.get(name), weights_dir)


def panel_summary(plan, job) -> dict:
    """For `storyd validate`: which character's references steer the panel, and its control."""
    character = reference.steering_character(plan, job)
    panel_control = control.panel_control(plan, job)
    return {
        "reference": None if character is None else {"character": character.name, "scale": character.reference_scale},
        "control": None
        if panel_control is None
        else {"kind": panel_control.kind, "image": str(panel_control.image), "strength": panel_control.strength},
    }


@dataclass
class Conditioning:
    """The adapter and ControlNets loaded for one render; either may be None."""

    plan: object  # RenderPlan
    adapter: reference.ReferenceAdapter | None
    nets: control.ControlNets | None
    detected: dict = field(default_factory=dict)  # panel index -> the control map an annotator drew from a photo

    def prepare(self, pipe, jobs, *, cfg: bool):
        """(the pipeline to call, its extra arguments) for a batch of jobs."""
        plan = self.plan
        kwargs: dict = {}
        call = pipe
        if self.adapter is not None:
            characters = [c.name if c else None for c in (reference.steering_character(plan, j) for j in jobs)]
            kwargs.update(self.adapter.call_kwargs(pipe, characters, cfg=cfg, width=plan.width, height=plan.height))
        if self.nets is not None:
            controls = [control.panel_control(plan, j) for j in jobs]
            call, extra = self.nets.prepare(pipe, controls, width=plan.width, height=plan.height)
            kwargs.update(extra)
            self.detected.update({j.index: m for j, m in zip(jobs, self.nets.detected) if m is not None})
        return call, kwargs


@contextlib.contextmanager
def conditioning(pipe, plan, *, device: str, weights_dir: Path | None = None) -> Iterator[Conditioning]:
    """Load what the plan's panels need into (and beside) `pipe`; undone on exit. Enter it before CSA."""
    with (
        reference.reference_adapter(pipe, plan, device=device, weights_dir=weights_dir) as adapter,
        control.control_nets(pipe, plan, device=device, weights_dir=weights_dir) as nets,
    ):
        yield Conditioning(plan, adapter, nets)
