"""The render plan: every panel's final prompt, seed and role, the batches, and estimates.

`plan_story` is pure (no model is loaded), so `storyd validate` is instant and
`storyd comic` renders exactly what validate printed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from storyd.errors import InputError
from storyd.plan.estimate import Estimate, estimate_run
from storyd.plan.loras import LoraUse, plan_loras
from storyd.plan.presets import Preset, get_preset, scheduler_name
from storyd.plan.seeds import panel_seed
from storyd.plan.settings import resolve_consistency
from storyd.story.model import ConsistencySettings, Story
from storyd.story.prompts import PanelPrompt, build_prompts

REFERENCE, READ, PLAIN = "reference", "read", "plain"


@dataclass(frozen=True)
class PanelJob:
    index: int
    prompt: PanelPrompt
    seed: int
    role: str  # reference: drawn in write mode for its character; read: reads banks; plain: no character / CSA off
    loras: tuple[tuple[str, float], ...] = ()  # (LoRA key, weight) active for this panel (storyd.plan.loras)


@dataclass(frozen=True)
class Batch:
    mode: str  # write | read | off
    panels: tuple[int, ...]
    character: str | None = None  # the character a write batch draws


@dataclass(frozen=True)
class RenderPlan:
    story: Story
    preset: Preset
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str  # a storyd scheduler name, or the model's own scheduler class
    consistency: ConsistencySettings
    jobs: tuple[PanelJob, ...]
    references: dict[str, tuple[int, ...]]  # character -> reference panel indices (empty where a bank is loaded)
    loaded_banks: tuple[str, ...]
    estimate: Estimate
    loras: tuple[LoraUse, ...] = ()  # every LoRA the story uses

    def batches(self, todo: set[int], have_banks: frozenset[str] = frozenset()) -> list[Batch]:
        """The batches that render `todo`: write batches for every character a read panel in
        `todo` needs (unless its bank is in `have_banks` and none of its reference panels is
        in `todo`), then read batches."""
        c = self.consistency
        if not c.enabled:
            return [Batch("off", chunk) for chunk in self._chunks([j.index for j in self.jobs if j.index in todo])]
        needed = {ch for j in self.jobs if j.index in todo for ch in j.prompt.characters}
        needed |= {ch for ch, refs in self.references.items() if todo & set(refs)}
        batches = [
            Batch("write", refs, ch)
            for ch, refs in self.references.items()
            if refs and ch in needed and (ch not in have_banks or todo & set(refs))
        ]
        reading = [j.index for j in self.jobs if j.index in todo and j.role != REFERENCE]
        return batches + [Batch("read", chunk) for chunk in self._chunks(reading)]

    def _chunks(self, indices: list[int]) -> list[tuple[int, ...]]:
        """`indices` in batches of `batch_size`; panels drawn with different LoRAs never share a batch."""
        size = self.consistency.batch_size
        groups: dict[tuple, list[int]] = {}
        for i in indices:
            groups.setdefault(self.jobs[i].loras, []).append(i)
        return [tuple(g[k : k + size]) for g in groups.values() for k in range(0, len(g), size)]


def plan_story(
    story: Story,
    *,
    model: str | None = None,
    consistency: Mapping[str, object] | None = None,
    seed: int | None = None,
    panel_seeds: Mapping[int, int] | None = None,
    loaded_banks: tuple[str, ...] = (),
    tokenizer=None,
    device: str = "cpu",
    scheduler: str | None = None,
    dtype: str = "auto",
) -> RenderPlan:
    """The plan of `story` under the caller's options: `consistency` holds only the CSA settings
    to change over the model's and the story's (see `resolve_consistency`); `seed` replaces the
    story's base seed; `panel_seeds` (0-based panel -> seed) replace single panels' seeds, as
    `--redo` does. The plan's `story` carries both, so everything downstream sees one seed.
    `dtype` (the run's --dtype) sizes the bank estimate."""
    preset = get_preset(model or story.model)
    story = _with_seeds(story, seed, panel_seeds or {})
    width, height = story.width or preset.width, story.height or preset.height
    steps = story.steps or preset.steps
    guidance = story.guidance if story.guidance is not None else preset.guidance
    scheduler = scheduler or story.scheduler or scheduler_name(preset)
    consistency = resolve_consistency(preset, story, consistency)
    prompts = build_prompts(story, tokenizer)
    references = _reference_panels(story, consistency, loaded_banks) if consistency.enabled else {}
    reference_of = {i for refs in references.values() for i in refs}
    loras, panel_loras = plan_loras(story, preset.family, preset.name)
    jobs = []
    for panel, prompt in zip(story.panels, prompts):
        seed = panel.seed if panel.seed is not None else panel_seed(story.seed, panel.index)
        if panel.index in reference_of:
            role = REFERENCE
        elif consistency.enabled and panel.characters:
            role = READ
        else:
            role = PLAIN
        jobs.append(PanelJob(panel.index, prompt, seed, role, panel_loras[panel.index]))
    estimate = estimate_run(
        preset,
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        consistency=consistency,
        reference_counts=[len(r) for r in references.values()],
        n_panels=len(jobs),
        device=device,
        dtype=dtype,
    )
    return RenderPlan(
        story,
        preset,
        width,
        height,
        steps,
        guidance,
        scheduler,
        consistency,
        tuple(jobs),
        references,
        loaded_banks,
        estimate,
        loras,
    )


def _reference_panels(
    story: Story, consistency: ConsistencySettings, loaded_banks: tuple[str, ...]
) -> dict[str, tuple[int, ...]]:
    """Each shown character's first `id_panels` solo panels; a clear error where there are none."""
    shown = {name for panel in story.panels for name in panel.characters}
    references: dict[str, tuple[int, ...]] = {}
    for name, character in story.characters.items():
        if name not in shown or name in loaded_banks:
            continue
        solo = [p.index for p in story.panels if p.characters == (name,)]
        if not solo:
            raise InputError(
                f"character '{name}' never appears alone in a panel, so Consistent Self-Attention has no reference "
                "panel to learn their look from",
                f"add a panel that shows only {name}, load a saved bank with --load-characters, "
                "or set 'consistency: {enabled: false}'",
                path=story.path,
                line=character.line or None,
            )
        references[name] = tuple(solo[: consistency.id_panels])
    return references


def _with_seeds(story: Story, seed: int | None, panel_seeds: Mapping[int, int]) -> Story:
    panels = tuple(
        dataclasses.replace(p, seed=panel_seeds[p.index]) if p.index in panel_seeds else p for p in story.panels
    )
    return dataclasses.replace(story, seed=story.seed if seed is None else seed, panels=panels)
