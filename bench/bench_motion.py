"""Toy motion: the shipped Semantic Motion Predictor against slerp, per kind of motion (issue 30).

Held-back clips of the toy world (seed 777; the predictor learnt from seed 0's), 40 per
kind, encoded frame by frame with the shipped toy image encoder. For each clip the
predictor and spherical interpolation both get the first and last frame's 65 tokens
and give the 14 frames between; the error is 1 - cos between a predicted token and the
true frame's, averaged over those frames and tokens. `reduction`: how much lower the
predictor's error is (target: 30% on jump and sit-down, no worse on the rest), over all
clips and over those whose setting stays (`same_setting`) or fades into another.
"""

from __future__ import annotations


def run() -> list[dict]:
    from storyd.animate.motion import load_predictor
    from storyd.toy.image_encoder import load_image_encoder
    from storyd.toy.motion_train import evaluate_motion, shipped_motion_weights

    predictor, _ = load_predictor(shipped_motion_weights())
    scores = evaluate_motion(predictor, load_image_encoder(), per_motion=40)
    return [{"motion": motion, "clips": 40, "slerp_error": s["slerp"], "smp_error": s["smp"],
             "reduction": f"{100 * s['reduction']:.0f}%", "same_setting": f"{100 * s['same_setting']:.0f}%",
             "changing_setting": f"{100 * s['changing_setting']:.0f}%"} for motion, s in scores.items()]
