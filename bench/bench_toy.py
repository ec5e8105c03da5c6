"""Toy model: identity agreement and prompt adherence, CSA off / write / read (issue 5's measure).

20 stories of 4 to 8 panels about one kid whose prompts name hair, skin and trousers
but leave shirt colour, shirt pattern, hat and glasses to the model. `agreement`: the
fraction of panel pairs of a story whose free attributes all match, as the attribute
reader reads them; `agree_*`: per attribute. `adherence_*`: the fraction of panels whose
setting and action are what the prompt names. Three CSA settings: the toy model's own
defaults (model.json: one reference panel drawn at guidance 7, every self-attention layer,
read at the reference's last step by the conditional half only), the same with the
reference drawn at the story's guidance (4) and with both guidance halves reading, and the
published ones (up blocks, rate 0.5, warm-up 1, random
skip, two reference panels read step by step). The toy defaults also read a perfect
reference (`read-world`): every panel reads a bank written from the world's own render of
the story's first panel, which parts what the drawn reference costs from what copying does.
Last, the same stories with every prompt naming the kid's whole look (free attributes drawn
at random per story), CSA off and read, scored on the same four attributes: how far the
prompt alone carries a look, and the most this model draws when both told and shown it.

Two calibration rows come first: the same stories drawn by the world itself with one
look each (five looks per story), read as drawn and after the model's VAE round trip.
The second is the most a perfectly consistent model could score here: the VAE still
loses glasses on some dark faces.
"""

from __future__ import annotations

import dataclasses

from storyd.story.model import ConsistencySettings

WORLD_DRAWS = 5


def run() -> list[dict]:
    from storyd.plan.presets import get_preset, model_consistency
    from storyd.render.pipelines import load_pipeline
    from storyd.toy.consistency import READ_WORLD, make_cases, measure, name_the_look, score, world_stories

    preset = get_preset("toy")
    pipe = load_pipeline(preset, device="cpu")
    cases = make_cases(20, seed=0)
    toy = model_consistency(preset)
    rows = []
    for label, vae in (("drawn by the world", None), ("world, through the VAE", pipe.vae)):
        stories = [story for seed in range(WORLD_DRAWS) for story in world_stories(cases, vae=vae, seed=seed)]
        rows.append({"csa": "perfect consistency", **_fmt({"mode": label, **score(stories, cases * WORLD_DRAWS)})})
    both_halves = dataclasses.replace(toy, uncond_reads=True)
    story_guidance = dataclasses.replace(toy, reference_guidance=None)
    for label, settings, modes in (("toy defaults", toy, ("off", "write", "read", READ_WORLD)),
                                   ("toy defaults, reference at the story's guidance", story_guidance, ("read",)),
                                   ("toy defaults, both halves read", both_halves, ("read",)),
                                   ("published", ConsistencySettings(), ("write", "read"))):
        for row in measure(pipe, cases, settings, modes=modes):
            rows.append({"csa": label if row["mode"] != "off" else "-", **_fmt(row)})
    for row in measure(pipe, name_the_look(cases), toy, modes=("off", "read")):
        rows.append({"csa": "toy defaults" if row["mode"] != "off" else "-",
                     **_fmt({**row, "mode": f"{row['mode']}, every prompt names the whole look"})})
    return rows


def _fmt(row: dict) -> dict:
    return {k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in row.items()}


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("toy consistency", run())
