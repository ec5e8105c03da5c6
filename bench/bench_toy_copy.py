"""Toy model: does it use CSA's shared tokens? Its training loss on the cells a kid covers, CSA off vs on.

8 held-out stories of one kid: a reference panel noised to t=50 writes the bank, and
four panels of the same kid at t=400 or 800 read it (the toy defaults: every
self-attention layer, all tokens); and, for write mode, four panels at one noise level
sharing tokens. A model that copies identity from the reference predicts the noisy kids
better with CSA on; one that does not scores the same either way. Captions are the
training captions, which leave about half the look unnamed.
"""

from __future__ import annotations

import random

import torch

PANELS, STORIES = 5, 8


def run() -> list[dict]:
    from storyd.csa.bank import CharacterBank
    from storyd.csa.processor import OFF, READ, WRITE, ConsistencyState, consistent_attention
    from storyd.plan.presets import get_preset
    from storyd.render.pipelines import load_pipeline
    from storyd.story.model import ConsistencySettings
    from storyd.toy.captions import story_captions
    from storyd.toy.train import figure_weights, render_dataset, to_unit, tokenize, training_scheduler

    pipe = load_pipeline(get_preset("toy"), device="cpu")
    unet, vae, text_encoder = pipe.unet.float(), pipe.vae.float(), pipe.text_encoder.float()
    scenes, pixels, masks = render_dataset(0, 999, 64, STORIES, PANELS)  # a seed training never uses
    rng = random.Random(0)
    texts = [c for k in range(STORIES) for c in story_captions(scenes[k * PANELS:(k + 1) * PANELS], rng)]
    schedule = training_scheduler()
    settings = ConsistencySettings(layers="all", sampling_rate=(1.0,), warmup_steps=0, random_skip=False)
    state = ConsistencyState(settings, seed=0)
    refs = list(range(0, STORIES * PANELS, PANELS))
    readers = [i for i in range(STORIES * PANELS) if i % PANELS]
    groups = [(f"story{i // PANELS}",) for i in readers]
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad(), consistent_attention(unet, state, "all"):
        z0 = vae.encode(to_unit(pixels)).latent_dist.mean * vae.config.scaling_factor
        cond = text_encoder(tokenize(pipe.tokenizer, texts))[0]
        kid = (figure_weights(masks, z0.shape[-1], 2.0) - 1.0)[readers]  # 1 on the cells a kid touches

        def score(mode: str, zt, t, target, groups, images) -> str:
            state.begin_batch(mode, groups, cfg=False)
            err = (unet(zt[images], t[images], cond[images]).sample - target[images]).pow(2)
            return f"{(err * kid).sum().item() / kid.sum().item() / z0.shape[1]:.4f}"

        for level in (400, 800):
            for mode in ("read", "write"):
                t = torch.full((len(z0),), level)
                if mode == "read":
                    t[refs] = 50
                noise = torch.randn(z0.shape, generator=g)
                zt, target = schedule.add_noise(z0, noise, t), schedule.get_velocity(z0, noise, t)
                if mode == "read":  # the references write the bank; the readers read it
                    state.bank = CharacterBank()
                    state.begin_batch(WRITE, [(f"story{k}",) for k in range(STORIES)], cfg=False)
                    unet(zt[refs], t[refs], cond[refs])
                off = score(OFF, zt, t, target, groups, readers)
                on = score(READ if mode == "read" else WRITE, zt, t, target, groups, readers)
                rows.append({"csa mode": mode, "readers' noise level": level,
                             "reference": "t=50" if mode == "read" else "-", "loss csa off": off, "loss csa on": on})
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("toy copy", run())
