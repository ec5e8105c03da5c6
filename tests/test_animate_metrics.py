"""Transition metrics: the LPIPS formula over a given feature net, and CLIPSIM, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from storyd.animate.metrics import TransitionScorer, conv_features, lpips_form_distance, transition_metrics


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())


def frames(values):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (8, 8, 3))
    return [np.clip(base + v, 0, 255).astype(np.uint8) for v in values]


def test_lpips_formula_by_hand():
    x = torch.tensor([[[[3.0]], [[4.0]]]])  # (1, C=2, 1, 1): unit vector (0.6, 0.8)
    y = torch.tensor([[[[4.0]], [[3.0]]]])  # (0.8, 0.6)
    assert torch.allclose(lpips_form_distance([x], [y]), torch.tensor([0.08]))  # 0.2² + 0.2²
    w = [torch.tensor([1.0, 0.0])]
    assert torch.allclose(lpips_form_distance([x], [y], w), torch.tensor([0.04]))
    tokens_x, tokens_y = x.flatten(2).transpose(1, 2), y.flatten(2).transpose(1, 2)  # (1, T=1, C=2)
    assert torch.allclose(lpips_form_distance([tokens_x, x], [tokens_y, y]), torch.tensor([0.16]))  # layers add up
    assert torch.equal(lpips_form_distance([x], [x]), torch.tensor([0.0]))


def test_still_clip_scores_zero_distance_and_full_similarity():
    scorer = TransitionScorer(conv_features(tiny_net(), taps=(1, 3)), lambda f: torch.ones(len(f), 5))
    scores = scorer.score(frames([0, 0, 0]))
    still = {"clip_token_distance_first": 0, "clip_token_distance_frames": 0, "clipsim_first": 1, "clipsim_frames": 1}
    assert scores == pytest.approx(still)


def test_first_compares_with_frame_one_and_frames_with_neighbours():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # frame 3 returns to frame 1
    clip = frames([0, 60, 0])
    scores = transition_metrics(clip, features=conv_features(tiny_net(), taps=(3,)), embed=lambda f: embeddings)
    assert scores["clipsim_first"] == pytest.approx(0.5)  # cos(1,2)=0, cos(1,3)=1
    assert scores["clipsim_frames"] == pytest.approx(0.0)  # cos(1,2)=0, cos(2,3)=0
    # frame 3 equals frame 1, so the distance to the first is half of one step; between frames, a full step
    assert scores["clip_token_distance_first"] > 0
    assert scores["clip_token_distance_frames"] == pytest.approx(2 * scores["clip_token_distance_first"], rel=1e-5)
    with pytest.raises(ValueError):
        transition_metrics(clip[:1], features=conv_features(tiny_net(), taps=(3,)), embed=lambda f: embeddings)
