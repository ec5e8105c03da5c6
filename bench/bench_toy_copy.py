"""Toy model: does it use CSA's shared tokens? The training loss on the cells a kid covers, CSA off vs write.

8 held-out four-panel stories of one kid each, noised to one level for all panels (or one
panel at 100 and three at 800), through the toy UNet with CSA off and in write mode (up
blocks, rate 1, no skip). A model that copies identity from the other panels predicts the
noisy kids better with CSA on; one that does not scores the same either way.
"""

from __future__ import annotations

import random

import torch

LEVELS = ((200,) * 4, (400,) * 4, (600,) * 4, (800,) * 4, (100, 800, 800, 800))


def run() -> list[dict]:
    from storyd.attention import OFF, WRITE, ConsistencyState, consistent_attention
    from storyd.models import get_preset, load_pipeline
    from storyd.story import ConsistencySettings
    from storyd.toy.captions import story_captions
    from storyd.toy.train import NoBank, figure_weights, render_dataset, to_unit, tokenize, training_scheduler

    pipe = load_pipeline(get_preset("toy"), device="cpu")
    unet, vae, text_encoder = pipe.unet.float(), pipe.vae.float(), pipe.text_encoder.float()
    stories, panels = 8, 4
    scenes, pixels, masks = render_dataset(0, 999, 64, stories, panels)  # a seed training never uses
    rng = random.Random(0)
    texts = [c for k in range(stories) for c in story_captions(scenes[k * panels:(k + 1) * panels], rng)]
    schedule = training_scheduler()
    state = ConsistencyState(ConsistencySettings(layers="up", sampling_rate=(1.0,), warmup_steps=0,
                                                 random_skip=False), seed=0, bank=NoBank())
    groups = [(f"story{i // panels}",) for i in range(len(scenes))]
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad(), consistent_attention(unet, state, "up"):
        z0 = vae.encode(to_unit(pixels)).latent_dist.mean * vae.config.scaling_factor
        cond = text_encoder(tokenize(pipe.tokenizer, texts))[0]
        kid = figure_weights(masks, z0.shape[-1], 2.0) - 1.0  # 1 on the cells a kid touches
        for levels in LEVELS:
            t = torch.tensor(levels * stories)
            noise = torch.randn(z0.shape, generator=g)
            zt, target = schedule.add_noise(z0, noise, t), schedule.get_velocity(z0, noise, t)
            scored = kid * (t >= max(levels)).float()[:, None, None, None]  # the noisiest panels
            row = {"noise levels": "/".join(map(str, levels))}
            for mode in (OFF, WRITE):
                state.begin_batch(mode, groups, cfg=False)
                err = (unet(zt, t, cond).sample - target).pow(2)
                row[f"loss csa {mode}"] = f"{(err * scored).sum().item() / scored.sum().item() / z0.shape[1]:.4f}"
            rows.append(row)
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("toy copy", run())
