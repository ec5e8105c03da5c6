"""Toy video stage: transitions against the world's truth, SMP vs slerp vs interpolate (issue 30, part 5).

Held-back clips of the toy world (seed 777, 2 per kind of motion; the stage and the SMP learnt
from seed 0's): each transition is rendered from a clip's first and last frames and measured
with :mod:`storyd.toy.video_eval`. `identity`: fraction of frame pairs of a transition whose
whole look reads the same (target: the comic's read-mode figure, 0.584); `per_attr`: the same per
attribute; `key_err`: mean absolute error (0 to 1) of the first and last frames against the
keyframes; `iou` and `centre_px`: the in-between frames' kid silhouette against the truth's.
Rows: the true frames (the measure's ceiling); the true frames encoded and decoded by the toy VAE
(the ceiling of anything drawn in its latents); the toy stage with the shipped SMP (keyframe
attention on, the ends held clean) given the kid's look as its prompt, as `storyd animate` gives a
comic's transitions their character's description (:func:`storyd.toy.video_eval.look_prompt`), and
so with slerp, and with the SMP from starting noise at temperature 1 instead of the stage's 0.3;
then, all on the empty prompt: the toy stage with the SMP; with the true frames' own image tokens
in place of the SMP's (what a perfect predictor would give); with the SMP replaced by slerp between
the keyframes' tokens; without keyframe attention
(:mod:`storyd.animate.backends.keyframe_attention`); with the ends held at each step's noise level
instead of clean; with neither (the stage as it drew before them); without holding the first and
last frames to the keyframes' latents (`KeyframeHold`); with the image prompt cut (scale 0); the
`interpolate` backend; last, the stage with the SMP, with and without the look prompt, averaged
over three starting noises (`NOISE_SEEDS`; the rows above draw from seed 0), as the noise alone
moves identity by a few points on 12 clips.
"""

from __future__ import annotations

import time
from dataclasses import replace

CLIPS_PER_MOTION = 2
NOISE_SEEDS = (0, 1, 2)  # the last two rows: the stage's headline rows drawn from three starting noises


def run() -> list[dict]:
    import numpy as np
    import torch

    from storyd.animate.interpolate import InterpolateBackend
    from storyd.toy.motion_train import EVAL_SEED
    from storyd.toy.motion_world import MOTIONS, make_clips
    from storyd.toy.reader import AttributeReader
    from storyd.toy.video_eval import evaluate_transitions
    from storyd.toy.video_stage import load_toy_video_backend

    clips = make_clips(CLIPS_PER_MOTION * len(MOTIONS), EVAL_SEED)
    reader = AttributeReader.load()
    truths, decoded, tokens_of = iter(clips), iter(clips), iter(clips)  # rows walk the clips in evaluate's order

    def world(start, end, frames, prompt):
        clip = next(truths)
        return [np.asarray(clip.render(i)) for i in range(frames)]

    stage = load_toy_video_backend()

    def through_vae(start, end, frames, prompt):
        vae = stage.pipe.vae
        pixels = torch.from_numpy(np.stack([np.asarray(f) for f in next(decoded).frames()[:frames]]))
        with torch.no_grad():
            latents = vae.encode(pixels.permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mean
            images = vae.decode(latents).sample.clamp(-1, 1)
        return list((images.permute(0, 2, 3, 1) * 127.5 + 127.5).round().to(torch.uint8).numpy())

    def with_settings(**fields):
        return lambda start, end, frames, prompt: replace(stage, **fields).render(start, end, frames, prompt)

    def with_true_tokens(start, end, frames, prompt):
        clip = next(tokens_of)
        variant = replace(stage)
        variant.frame_tokens = lambda *_: stage.encoder.hidden_tokens(clip.frames()[:frames]).unsqueeze(0)
        return variant.render(start, end, frames, prompt)

    renders = {  # name: (render, whether it is given the look prompt)
        "world (true frames)": (world, False),
        "world through the toy VAE": (through_vae, False),
        "toy stage + SMP, look prompt": (stage.render, True),
        "toy stage + slerp, look prompt": (with_settings(predictor=None), True),
        "toy stage + SMP, look prompt, noise temperature 1": (with_settings(noise_temperature=1.0), True),
        "toy stage + SMP": (stage.render, False),
        "toy stage + true frames' tokens": (with_true_tokens, False),
        "toy stage + slerp": (with_settings(predictor=None), False),
        "toy stage + SMP, no keyframe attention": (with_settings(keyframe_attention=0.0), False),
        "toy stage + SMP, ends held noised": (with_settings(hold_noised=True), False),
        "toy stage + SMP, neither": (with_settings(keyframe_attention=0.0, hold_noised=True), False),
        "toy stage + SMP, ends not held": (with_settings(hold_keyframes=False), False),
        "toy stage, image prompt cut": (with_settings(image_prompt_scale=0.0), False),
        "interpolate": (InterpolateBackend().render, False),
    }
    rows, measured = [], {}
    for name, (render, prompted) in renders.items():
        started = time.perf_counter()
        measured[name] = evaluate_transitions(render, clips, reader, prompted=prompted)
        rows.append(_row(name, len(clips), measured[name], (time.perf_counter() - started) / len(clips)))
    assert stage.seed == NOISE_SEEDS[0]  # so the rows above are the first noise's
    for prompted in (True, False):  # the noise alone moves identity by a few points on 12 clips
        started = time.perf_counter()
        runs = [measured[f"toy stage + SMP{', look prompt' if prompted else ''}"]]
        runs += [evaluate_transitions(replace(stage, seed=seed).render, clips, reader, prompted=prompted)
                 for seed in NOISE_SEEDS[1:]]
        scores = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
        name = f"toy stage + SMP{', look prompt' if prompted else ''}, mean of noise seeds 0-{NOISE_SEEDS[-1]}"
        rows.append(_row(name, len(clips) * len(NOISE_SEEDS), scores,
                         (time.perf_counter() - started) / len(clips) / len(NOISE_SEEDS[1:])))
    return rows


def _row(name: str, clips: int, scores: dict[str, float], seconds: float) -> dict:
    return {"frames": name, "clips": clips, "identity": f"{scores['identity']:.2f}",
            "per_attr": f"{scores['identity_per_attribute']:.3f}", "key_err": f"{scores['keyframe_error']:.3f}",
            "iou": f"{scores['iou']:.2f}", "centre_px": f"{scores['centre_px']:.1f}",
            "s_per_transition": f"{seconds:.1f}"}
