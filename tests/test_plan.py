import pytest

from storyd.errors import InputError
from storyd.plan.render_plan import READ, REFERENCE, plan_story
from storyd.plan.seeds import panel_seed
from storyd.story.loader import load_story
from storyd.story.model import ConsistencySettings

STORY = """
seed: 5
model: tiny
characters:
  Mia: a kid with red hair
  Sam: a kid in a green shirt
panels:
  - Mia waving
  - Sam sitting
  - Mia running
  - Mia and Sam jumping
  - prompt: Sam running
    seed: 77
  - Mia sitting
  - "[NC] a room"
"""


def test_reference_panels_are_each_characters_first_solo_panels(write_story):
    plan = plan_story(load_story(write_story(STORY)))
    assert plan.references == {"Mia": (0, 2), "Sam": (1, 4)}
    assert [j.role for j in plan.jobs] == [REFERENCE, REFERENCE, REFERENCE, READ, REFERENCE, READ, "plain"]
    assert plan.jobs[4].seed == 77 and plan.jobs[0].seed == panel_seed(5, 0) != plan.jobs[1].seed


def test_batches_write_each_character_then_read(write_story):
    plan = plan_story(load_story(write_story(STORY)))
    batches = plan.batches({j.index for j in plan.jobs})
    assert [(b.mode, b.panels, b.character) for b in batches] == [
        ("write", (0, 2), "Mia"),
        ("write", (1, 4), "Sam"),
        ("read", (3, 5, 6), None),
    ]
    only_six = plan.batches({5})  # a read panel of Mia needs Mia's bank, not Sam's
    assert [(b.mode, b.panels) for b in only_six] == [("write", (0, 2)), ("read", (5,))]


def test_id_panels_and_batch_size_are_honoured(write_story):
    story = load_story(
        write_story(STORY.replace("model: tiny", "model: tiny\nconsistency: {id_panels: 1, batch_size: 2}"))
    )
    plan = plan_story(story)
    assert plan.references == {"Mia": (0,), "Sam": (1,)}
    reads = [b.panels for b in plan.batches(set(range(7))) if b.mode == "read"]
    assert reads == [(2, 3), (4, 5), (6,)]


def test_a_character_without_a_solo_panel_is_a_clear_error(write_story):
    path = write_story("characters:\n  Mia: a kid\n  Sam: a kid\npanels:\n  - Mia waving\n  - Mia and Sam running\n")
    with pytest.raises(InputError) as info:
        plan_story(load_story(path))
    assert "'Sam' never appears alone" in info.value.message and info.value.line == 3
    assert "add a panel that shows only Sam" in info.value.hint


def test_csa_off_plans_plain_batches(write_story):
    story = load_story(write_story(STORY + "consistency:\n  enabled: false\n"))
    plan = plan_story(story)
    assert plan.references == {} and {j.role for j in plan.jobs} == {"plain"}
    assert all(b.mode == "off" for b in plan.batches(set(range(7))))


def test_estimate_counts_the_bank(write_story):
    plan = plan_story(load_story(write_story(STORY)))
    assert plan.estimate.bank_bytes > 0 and len(plan.estimate.bank_bytes_per_character) == 2
    doubled = plan_story(load_story(write_story(STORY.replace("seed: 5", "seed: 5\nsteps: 9"))))
    assert doubled.estimate.bank_bytes == plan.estimate.bank_bytes * (9 - 1) // (4 - 1)


def test_a_bank_read_at_the_last_step_is_estimated_at_one_step(write_story):
    every = plan_story(load_story(write_story(STORY)))  # tiny: 4 steps, warm-up 1
    last = plan_story(load_story(write_story(STORY + "consistency:\n  read_step: last\n")))
    assert last.estimate.bank_bytes * (4 - 1) == every.estimate.bank_bytes


def test_the_model_gives_the_settings_a_story_leaves_out(write_story, monkeypatch):
    import storyd.plan.settings

    model = ConsistencySettings(id_panels=1, read_step="last")
    monkeypatch.setattr(storyd.plan.settings, "model_consistency", lambda preset: model)
    plan = plan_story(load_story(write_story(STORY)))
    assert plan.references == {"Mia": (0,), "Sam": (1,)} and plan.consistency.read_step == "last"
    named = plan_story(load_story(write_story(STORY + "consistency:\n  id_panels: 2\n")))
    assert named.references == {"Mia": (0, 2), "Sam": (1, 4)} and named.consistency.read_step == "last"
