"""The generator with CSA on a whole (tiny) pipeline: schedulers, determinism, flat read cost."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from storyd.plan.render_plan import plan_story
from storyd.render.generator import PanelGenerator
from storyd.render.schedulers import make_scheduler
from storyd.story.loader import load_story


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline("tiny")


def story_text(read_panels: int) -> str:
    panels = ["Mia waving", "Mia running"] + [f"Mia sitting number {i}" for i in range(read_panels)]
    return "model: tiny\nsteps: 4\ncharacters:\n  Mia: a kid\npanels:\n" + "".join(f"  - {p}\n" for p in panels)


def draw(pipe, plan, todo=None):
    gen = PanelGenerator(pipe, plan, device="cpu")
    return gen, gen.draw(todo)


def test_a_heun_scheduler_steps_once_per_scheduler_step(pipe, write_story):
    plan = plan_story(load_story(write_story(story_text(1))))
    original = pipe.scheduler
    pipe.scheduler = make_scheduler("heun", original.config)
    try:
        gen, images = draw(pipe, plan)
    finally:
        pipe.scheduler = original
    steps = {step for (_, step) in gen.bank.entries["Mia"]}
    assert steps == set(range(plan.consistency.warmup_steps, plan.steps))  # not 2x: Heun calls the UNet twice a step
    assert len(images) == 3


def test_same_seed_same_images_and_resume_matches_a_full_run(pipe, write_story):
    plan = plan_story(load_story(write_story(story_text(2))))
    _, first = draw(pipe, plan)
    _, second = draw(pipe, plan)
    _, only_last = draw(pipe, plan, todo={3})
    for i in first:
        assert np.array_equal(np.asarray(first[i]), np.asarray(second[i]))
    assert np.array_equal(np.asarray(first[3]), np.asarray(only_last[3]))  # drawn alone, it is the same panel
    assert not np.array_equal(np.asarray(first[2]), np.asarray(first[3]))


def test_csa_changes_read_panels(pipe, write_story):
    story = load_story(write_story(story_text(1)))
    _, on = draw(pipe, plan_story(story))
    off_plan = plan_story(story, consistency={"enabled": False})
    _, off = draw(pipe, off_plan)
    assert not np.array_equal(np.asarray(on[2]), np.asarray(off[2]))


def test_read_cost_is_flat_as_the_story_grows(pipe, write_story):
    costs = []
    for read_panels in (1, 5):
        plan = plan_story(load_story(write_story(story_text(read_panels))))
        plan = dataclasses.replace(plan, consistency=dataclasses.replace(plan.consistency, batch_size=1))
        gen, images = draw(pipe, plan)
        assert len(images) == 2 + read_panels
        costs.append((gen.bank.nbytes(), gen.state.max_context_tokens))
    assert costs[0] == costs[1]


def test_reference_panels_are_drawn_at_the_reference_guidance(pipe, write_story, monkeypatch):
    """A write batch uses `reference_guidance`; the panels that read it keep the story's."""
    plan = plan_story(load_story(write_story(story_text(1))))
    plan = dataclasses.replace(plan, consistency=dataclasses.replace(plan.consistency, id_panels=1,
                                                                     reference_guidance=7.0))
    scales = []
    call = type(pipe).__call__

    def recording(self, **kw):
        scales.append(kw["guidance_scale"])
        return call(self, **kw)

    monkeypatch.setattr(type(pipe), "__call__", recording)
    gen, images = draw(pipe, plan)
    assert plan.guidance != 7.0 and scales[0] == 7.0 and set(scales[1:]) == {plan.guidance}, scales
    assert len(images) == 3 and gen.bank.entries["Mia"]  # the bank the readers read was written


def test_references_with_guidance_serve_panels_without_it(pipe, write_story):
    """At story guidance 1 the readers have one guidance half; a reference drawn at 7 leaves a bank of
    two, which still serves them."""
    plan = plan_story(load_story(write_story(story_text(1))))
    plan = dataclasses.replace(plan, guidance=1.0, consistency=dataclasses.replace(
        plan.consistency, id_panels=1, reference_guidance=7.0))
    gen, images = draw(pipe, plan)
    assert {t.shape[0] for t in gen.bank.entries["Mia"].values()} == {2} and len(images) == 3
    assert plan.consistency.guidance_for_references(plan.guidance) == 7.0
