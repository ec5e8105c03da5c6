"""The generator: draws batches of panels with a diffusers pipeline, CSA installed.

It owns the `ConsistencyState` for a run: each batch sets the mode (write for a
character's reference panels, read for the rest, off when CSA is disabled), and the
pipeline's step-end callback advances the step.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storyd.csa.bank import CharacterBank
from storyd.csa.processor import OFF, READ, WRITE, ConsistencyState, consistent_attention
from storyd.errors import InputError
from storyd.plan.render_plan import Batch, PanelJob, RenderPlan
from storyd.progress import NullProgress, Progress
from storyd.render.conditioning import Conditioning, conditioning
from storyd.render.lora import LoraSwitch, applied_loras
from storyd.render.prompt_encoding import prompt_arguments


@dataclass
class DrawnPanel:
    job: PanelJob
    image: object  # PIL.Image.Image
    seconds: float
    control_map: object = None  # the pose or depth map an annotator detected in the panel's control photo


class PanelGenerator:
    def __init__(
        self,
        pipe,
        plan: RenderPlan,
        *,
        device: str,
        bank: CharacterBank | None = None,
        weights_dir: Path | None = None,
    ) -> None:
        self.pipe = pipe
        self.plan = plan
        self.device = device
        self.weights_dir = weights_dir  # where pinned LoRAs, IP-Adapters and ControlNets are looked for
        # the banks rest where the plan placed them (a disk bank made here spills into the temp folder)
        bank = bank if bank is not None else CharacterBank(plan.footprint.bank_storage)
        self.state = ConsistencyState(plan.consistency, seed=plan.story.seed, bank=bank, device=device)

    @property
    def bank(self) -> CharacterBank:
        return self.state.bank

    def render(
        self,
        batches: list[Batch],
        *,
        keep: set[int],
        on_batch: Callable[[list[DrawnPanel]], None],
        progress: Progress | None = None,
    ) -> None:
        """Draw every batch in order; `on_batch` receives the drawn panels whose index is in `keep`."""
        from storyd.render.schedulers import SCHEDULERS, make_scheduler

        progress = progress or NullProgress()
        jobs = {j.index: j for j in self.plan.jobs}
        own_scheduler = self.pipe.scheduler
        if self.plan.scheduler in SCHEDULERS:  # a scheduler chosen by name stands in for the model's own
            self.pipe.scheduler = make_scheduler(self.plan.scheduler, own_scheduler.config)
        try:
            plan = self.plan
            with applied_loras(self.pipe, plan.loras, plan.story, plan.preset.name, self.weights_dir) as loras:
                self._render(batches, jobs, keep, on_batch, progress, loras)
        finally:
            self.pipe.scheduler = own_scheduler

    def _render(self, batches, jobs, keep, on_batch, progress, loras: LoraSwitch) -> None:
        with (
            conditioning(self.pipe, self.plan, device=self.device, weights_dir=self.weights_dir) as steer,
            consistent_attention(self.pipe.unet, self.state, self.plan.consistency.layers),
        ):
            for batch in batches:
                batch_jobs = [jobs[i] for i in batch.panels]
                label = (
                    f"{batch.character}'s reference panels"
                    if batch.mode == WRITE
                    else "panels " + ", ".join(str(i + 1) for i in batch.panels)
                )
                progress.update(label, 0, self.plan.steps, unit="steps")
                started = time.perf_counter()
                images = self._draw(batch, batch_jobs, functools.partial(progress.advance, label), steer, loras)
                progress.end(label)
                seconds = (time.perf_counter() - started) / len(batch_jobs)
                drawn = [
                    DrawnPanel(j, im, seconds, steer.detected.get(j.index))
                    for j, im in zip(batch_jobs, images)
                    if j.index in keep
                ]
                on_batch(drawn)
                progress.advance("panels", len(drawn))

    def draw(self, todo: set[int] | None = None, progress: Progress | None = None) -> dict:
        """Draw the panels in `todo` (default: all) and return their images by panel index."""
        todo = {j.index for j in self.plan.jobs} if todo is None else todo
        images: dict = {}
        self.render(
            self.plan.batches(todo),
            keep=todo,
            on_batch=lambda drawn: images.update({d.job.index: d.image for d in drawn}),
            progress=progress,
        )
        return images

    def _draw(
        self, batch: Batch, jobs: list[PanelJob], step_done: Callable[[], None], steer: Conditioning,
        loras: LoraSwitch,
    ) -> list:
        plan = self.plan
        guidance = plan.consistency.guidance_for_references(plan.guidance) if batch.mode == WRITE else plan.guidance
        cfg = guidance > 1
        if batch.mode == WRITE:
            self.state.begin_batch(WRITE, [(batch.character,)] * len(jobs), cfg=cfg)
        elif batch.mode == READ:
            self.state.begin_batch(READ, [j.prompt.characters for j in jobs], cfg=cfg)
        else:
            self.state.begin_batch(OFF, [() for _ in jobs], cfg=cfg)
        if len({j.loras for j in jobs}) != 1:  # adapters cannot differ within a batch: the plan never mixes sets
            raise RuntimeError(f"batch {[j.index for j in jobs]} mixes LoRA sets")
        loras.activate(jobs[0].loras)

        def on_step_end(pipe, step, timestep, callback_kwargs):
            step_done()
            return self.state.on_step_end(pipe, step, timestep, callback_kwargs)

        pipe, extra = steer.prepare(self.pipe, jobs, cfg=cfg)  # references (IP-Adapter), control (ControlNet)
        with torch.inference_mode():
            text = prompt_arguments(
                self.pipe, [j.prompt.prompt for j in jobs], [j.prompt.negative for j in jobs] if cfg else None
            )
            result = pipe(
                **text,
                num_inference_steps=plan.steps,
                guidance_scale=guidance,
                width=plan.width,
                height=plan.height,
                generator=[torch.Generator().manual_seed(j.seed) for j in jobs],
                callback_on_step_end=on_step_end,
                output_type="np",  # checked while still float; turned into PIL images as diffusers would
                **extra,
            )
        bad = [j.index + 1 for j, image in zip(jobs, result.images) if not np.isfinite(image).all()]
        if bad:
            raise InputError(
                f"the model drew NaN or infinite values in panel(s) {', '.join(map(str, bad))}; nothing was saved "
                "for them",
                "check its weights with `storyd comic --verify full` or `storyd weights verify --full`, "
                "or draw in fp32 (--dtype fp32)",
            )
        return pipe.image_processor.numpy_to_pil(result.images)
