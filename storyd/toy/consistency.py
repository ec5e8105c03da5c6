"""Does Consistent Self-Attention keep a toy character the same? Measured, offline.

A fixed set of stories about one kid whose description names only some attributes
(the rest are the model's choice), drawn three ways: CSA off; CSA in write mode (all
panels of a story in one batch, sharing tokens); and read mode, the way storyd draws a
story: ``id_panels`` reference panels in write mode, the rest reading their bank. The
attribute reader then scores identity agreement (panel pairs whose free attributes all
match) and prompt adherence (setting and action as named).

A fourth mode, ``read-world``, takes the model's own reference out of the measure: every
panel reads a bank written from the world's render of the story's first panel, a reference
as clean as the world draws it. What read mode loses against it is the drawn reference's
fault; what it loses against perfect consistency is the copying's. ``name_the_look`` gives
the same stories with every prompt spelling out the whole look: how far a description alone
carries it.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from storyd.story.model import Character, ConsistencySettings, Panel, Story
from storyd.toy.captions import describe
from storyd.toy.world import ACTIONS, LOOK_ATTRS, SETTINGS, CharacterLook, posed_scene, random_look, render

if TYPE_CHECKING:
    from storyd.csa.bank import CharacterBank

MODES = ("off", "write", "read")
READ_WORLD = "read-world"
NAMED = ("hair_colour", "hair_style", "skin", "trousers")  # what every panel's prompt says of the kid


@dataclass(frozen=True)
class Case:
    story: Story
    named: tuple[dict, ...]  # per panel, what its prompt names (the metrics' format)


def make_cases(count: int = 20, *, seed: int = 0, panels: tuple[int, int] = (4, 8), named=NAMED) -> list[Case]:
    """`count` one-character stories of 4 to 8 panels, the same every time for a seed."""
    rng = random.Random(seed)
    cases = []
    for number in range(count):
        look = random_look(rng)
        fixed = {a: getattr(look, a) for a in named}
        story_panels, story_named = [], []
        for index in range(rng.randint(*panels)):
            action, setting = rng.choice(ACTIONS), rng.choice(tuple(SETTINGS))
            story_panels.append(Panel(index, f"Kid {action} {SETTINGS[setting]}", ("Kid",)))
            story_named.append({"setting": setting, "figures": [{"action": action, **fixed}]})
        story = Story(
            title=f"consistency {number}",
            path=Path(f"consistency-{number}.yaml"),
            characters={"Kid": Character("Kid", describe(look, named))},
            panels=tuple(story_panels),
            model="toy",
            seed=rng.randrange(2**31),
        )
        cases.append(Case(story, tuple(story_named)))
    return cases


def settings_for(mode: str, base: ConsistencySettings, panels: int) -> ConsistencySettings:
    if mode == READ_WORLD and base.read_step != "last":
        raise ValueError("a bank written from an image holds one step: read it with read_step 'last'")
    if mode == "off":
        return dataclasses.replace(base, enabled=False)
    if mode == "write":
        return dataclasses.replace(base, enabled=True, id_panels=panels)
    return dataclasses.replace(base, enabled=True)


def draw_cases(pipe, cases: list[Case], mode: str, base: ConsistencySettings) -> tuple[list[list], float]:
    """Every story's panels in story order, and the seconds per panel."""
    from storyd.plan.render_plan import plan_story
    from storyd.render.generator import PanelGenerator

    references = [s[0] for s in world_stories(cases)] if mode == READ_WORLD else [None] * len(cases)
    stories, started, total = [], time.perf_counter(), 0
    for case, reference in zip(cases, references):
        settings = settings_for(mode, base, len(case.story.panels))
        plan = plan_story(case.story, consistency=dataclasses.asdict(settings),
                          loaded_banks=() if reference is None else ("Kid",))
        bank = None if reference is None else image_bank(pipe, plan, reference, 0, "Kid")
        images = PanelGenerator(pipe, plan, device="cpu", bank=bank).draw()
        stories.append([images[i] for i in sorted(images)])
        total += len(images)
    return stories, (time.perf_counter() - started) / max(total, 1)


def image_bank(pipe, plan, image, index: int, character: str) -> CharacterBank:
    """``character``'s bank written from an image rather than a drawn reference panel: the
    image's latent, noised to the level of the plan's last step, through the UNet once in
    write mode with the prompt of panel ``index``. That last step is all that ``read_step: last`` reads."""
    import torch

    from storyd.csa.processor import WRITE, ConsistencyState, consistent_attention

    prompt = plan.jobs[index].prompt
    scheduler = pipe.scheduler
    scheduler.set_timesteps(plan.steps)
    t = scheduler.timesteps[-1:]
    g = torch.Generator().manual_seed(plan.story.seed)
    with torch.inference_mode():
        z0 = pipe.vae.encode(pipe.image_processor.preprocess([image])).latent_dist.mean * pipe.vae.config.scaling_factor
        zt = scheduler.add_noise(z0, torch.randn(z0.shape, generator=g), t)
        cond, uncond = pipe.encode_prompt(prompt.prompt, "cpu", 1, True, prompt.negative)
        state = ConsistencyState(plan.consistency, seed=plan.story.seed)
        with consistent_attention(pipe.unet, state, plan.consistency.layers):
            state.begin_batch(WRITE, [(character,)], cfg=True)
            state.begin_step(plan.steps - 1)
            pipe.unet(torch.cat([zt, zt]), t, encoder_hidden_states=torch.cat([uncond, cond]))
    return state.bank


def measure(pipe, cases: list[Case], base: ConsistencySettings | None = None, modes=MODES, reader=None) -> list[dict]:
    """One row per mode: identity agreement (all free attributes, and per attribute), adherence, time."""
    base = base or ConsistencySettings()
    rows = []
    for mode in modes:
        stories, seconds = draw_cases(pipe, cases, mode, base)
        rows.append({"mode": mode, **score(stories, cases, reader), "seconds_per_panel": seconds})
    return rows


def world_stories(cases: list[Case], *, vae=None, seed: int = 0) -> list[list]:
    """Every story drawn by the world itself, one look per story: what a perfectly consistent
    model would draw. Named attributes, settings and actions are the prompts'; free attributes
    are drawn at random per story. With ``vae``, each panel goes through its encode-decode round
    trip, as every generated panel does: the ceiling the reader can report for a model."""
    rng = random.Random(seed)
    stories = []
    for case in cases:
        look = _story_look(case, rng)
        stories.append([render(posed_scene(rng, look, n["figures"][0]["action"], n["setting"])) for n in case.named])
    if vae is None:
        return stories
    from storyd.toy.reader import images_to_tensor, tensor_to_images
    from storyd.toy.reader_train import vae_round_trip

    flat = iter(tensor_to_images(vae_round_trip(images_to_tensor([im for s in stories for im in s]), vae.float())))
    return [[next(flat) for _ in s] for s in stories]


def _story_look(case: Case, rng: random.Random) -> CharacterLook:
    """A whole look for ``case``'s kid: what its prompts name, the free attributes at random."""
    named, drawn = case.named[0]["figures"][0], random_look(rng)
    return CharacterLook(**{a: named.get(a, getattr(drawn, a)) for a in LOOK_ATTRS})


def name_the_look(cases: list[Case], *, seed: int = 0) -> list[Case]:
    """The same stories with the kid's description naming the whole look, the free attributes
    drawn at random per story: what a user without CSA would write. Each case's ``named`` is
    left as it was, so ``score`` still measures the attributes the original prompts leave free:
    how often two panels agree on them when every prompt spells them out."""
    rng = random.Random(seed)
    return [dataclasses.replace(case, story=dataclasses.replace(
        case.story, characters={"Kid": Character("Kid", describe(_story_look(case, rng)))})) for case in cases]


def score(stories: list[list], cases: list[Case], reader=None) -> dict:
    """Identity agreement (all free attributes, and per attribute) and adherence of drawn stories."""
    from storyd.toy.metrics import identity_agreement, prompt_adherence
    from storyd.toy.reader import AttributeReader

    reader = reader or AttributeReader.load()
    named = [list(c.named) for c in cases]
    agreement = identity_agreement(stories, named, reader=reader)
    adherence = prompt_adherence([im for s in stories for im in s], [n for ns in named for n in ns], reader=reader)
    free = [a for a in LOOK_ATTRS if a in agreement["per_attribute"]]
    return {
        "agreement": agreement["all"],
        "agreement_mean_attr": sum(agreement["per_attribute"][a] for a in free) / len(free),
        **{f"agree_{a}": agreement["per_attribute"][a] for a in free},
        "adherence_setting": adherence["per_attribute"].get("setting"),
        "adherence_action": adherence["per_attribute"].get("action"),
        "pairs": agreement["pairs"],
    }
