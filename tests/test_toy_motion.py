"""The toy world in motion: clips and their truth, the toy image encoder, and the motion predictor trained on them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from storyd.animate.encoder import ClipImageEncoder
from storyd.animate.motion import lerp_embeddings, load_predictor, predict_embeddings
from storyd.animate.train_motion import TrainConfig
from storyd.errors import InputError
from storyd.toy.image_encoder import (
    POSE_DIM,
    SILHOUETTE_CELLS,
    Contrastive,
    EncoderSettings,
    caption_features,
    clip_frame_tensors,
    load_image_encoder,
    look_caption,
    pose_vector,
    render_pixels,
    silhouette_targets,
    train_image_encoder,
)
from storyd.toy.model_config import ToyModelConfig, build_text_encoder
from storyd.toy.motion_train import (
    embedding_error,
    evaluate_motion,
    shipped_motion_weights,
    train_toy_motion,
)
from storyd.toy.motion_world import END_ACTIONS, MOTIONS, make_clip, make_clips
from storyd.toy.world import pose_joints, random_scene
from storyd.weights import load_lock
from storyd.weights.checks import sha256_file

TINY_ENCODER = EncoderSettings(steps=6, batch=8, scenes=24, clips=2, clip_batch=8, width=16, layers=1, heads=2,
                               embed_dim=8, checkpoint_every=3)


def _mask(clip, i) -> np.ndarray:
    return np.asarray(clip.mask(i)) > 127


@pytest.mark.parametrize("motion", MOTIONS)
def test_a_clip_is_the_same_from_the_same_seed_and_another_from_another(motion):
    first, again, other = make_clip(11, motion), make_clip(11, motion), make_clip(12, motion)
    assert len(first.truth) == 16
    assert [f.tobytes() for f in first.frames()] == [f.tobytes() for f in again.frames()]
    assert first.frames()[0].tobytes() != other.frames()[0].tobytes()


def test_the_walking_kid_is_where_the_truth_says_in_every_frame():
    clip = make_clip(5, "walk")
    assert abs(clip.truth[-1].x - clip.truth[0].x) >= 12
    for i, truth in enumerate(clip.truth):
        xs = np.nonzero(_mask(clip, i))[1]
        assert abs((xs.min() + xs.max() + 1) / 2 - truth.x) < 3.5, i  # the box's centre, limbs swinging around it


def test_a_jump_leaves_the_ground_where_the_truth_says_and_lands_where_it_started():
    clip = make_clip(6, "jump")
    lowest = [np.nonzero(_mask(clip, i).any(axis=1))[0] for i in range(len(clip.truth))]
    shoe = 0.066 * clip.height  # a shoe's radius below the foot
    apex = max(range(len(clip.truth)), key=lambda i: clip.truth[i].lift)
    assert clip.truth[apex].lift > 6
    above_shadow = lowest[apex][lowest[apex] < clip.ground - 2]  # the shadow stays on the ground line
    assert abs(above_shadow.max() + 1 - (clip.truth[apex].feet + shoe)) < 1.5
    assert clip.truth[0].lift == clip.truth[-1].lift == 0 and clip.truth[0].x == clip.truth[-1].x
    assert clip.frames()[0].tobytes() == clip.frames()[-1].tobytes()


def test_a_changing_setting_fades_from_the_first_to_the_second():
    clip = next(c for c in make_clips(12, 4) if c.settings[0] != c.settings[1])
    frames = [np.asarray(f, dtype=float) for f in clip.frames()]
    assert [t.fade for t in clip.truth][:: 15] == [0.0, 1.0]
    setting = ~_mask(clip, 0) & ~_mask(clip, 15) & ~_mask(clip, 8)
    distance = [np.abs(f - frames[-1])[setting].mean() for f in frames]
    assert distance[0] > distance[8] > distance[15] == 0


@pytest.mark.parametrize("motion", MOTIONS)
def test_the_first_and_last_frames_hold_the_stills_poses(motion):
    clip = make_clip(21, motion)
    for truth, action in zip((clip.truth[0], clip.truth[-1]), END_ACTIONS[motion]):
        still = pose_joints(action, truth.x, clip.ground, clip.height)  # truth.x: rounded to 1e-3
        for part in ("hip", "shoulder", "feet"):
            assert truth.pose[part] == pytest.approx(still[part], abs=1e-3), (action, part)
        for drawn, chain in zip(truth.pose["legs"] + truth.pose["arms"], still["legs"] + still["arms"]):
            assert drawn[0] == pytest.approx(chain[0], abs=1e-3) and drawn[-1] == pytest.approx(chain[-1], abs=1e-3)


def test_clips_start_and_end_in_their_motions_states():
    for clip in make_clips(12, 9):
        moved = abs(clip.truth[-1].x - clip.truth[0].x)
        assert (moved >= 12) == (clip.motion in ("walk", "run")), clip.motion
        if clip.motion == "sit-down":
            assert clip.truth[-1].pose["hip"] > clip.truth[0].pose["hip"] + 5  # lower, on the stool


@pytest.fixture(scope="module")
def text_side(tokenizer):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_text_encoder(ToyModelConfig.tiny()).eval(), tokenizer


def test_a_few_contrastive_steps_lower_the_image_encoders_loss(text_side):
    text_encoder, tokenizer = text_side
    scenes = [random_scene(random.Random(i)) for i in range(16)]
    text = caption_features(text_encoder, tokenizer, [look_caption(s) for s in scenes])
    torch.manual_seed(0)
    model = Contrastive(TINY_ENCODER, text.shape[1])
    pixels = render_pixels(scenes, ClipImageEncoder(model.vision))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = model.loss(pixels, text)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_look_captions_name_every_look_and_neither_action_nor_setting():
    scene = random_scene(random.Random(2))  # two kids, waving and jumping, on the beach
    caption = look_caption(scene)
    assert caption.count("a kid with") == 2 and "wearing a hat and glasses" in caption
    assert not any(word in caption for word in ("waving", "jumping", "beach")), caption


def test_a_few_steps_lower_the_pose_silhouette_and_clip_invariance_losses():
    torch.manual_seed(0)
    model = Contrastive(TINY_ENCODER, 16)
    frames = clip_frame_tensors(make_clips(2, 3), ClipImageEncoder(model.vision))
    # frames i and 16 + i from one clip, as training pairs them
    pairs = torch.cat([torch.arange(0, 8), torch.arange(16, 24), torch.arange(8, 16), torch.arange(24, 32)])
    frames = {k: v[pairs] for k, v in frames.items()}
    pose = (frames["pose"] - frames["pose"].mean(0)) / frames["pose"].std(0).clamp_min(1e-3)
    silhouettes = silhouette_targets(frames["masks"], TINY_ENCODER.patch)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        pose_loss, silhouette_loss, invariance = model.motion_losses(frames["pixels"], pose, silhouettes)
        opt.zero_grad()
        (pose_loss + silhouette_loss + invariance).backward()
        opt.step()
        losses.append((pose_loss.item(), silhouette_loss.item(), invariance.item()))
    assert all(last < 0.8 * first for first, last in zip(losses[0], losses[-1])), losses[-1]
    same = torch.cat([frames["pixels"][:16]] * 2)  # each frame paired with itself
    assert model.motion_losses(same, pose, silhouettes)[2].item() == pytest.approx(0, abs=1e-6)


def test_each_patch_token_is_asked_for_the_silhouette_inside_its_own_patch():
    masks = torch.zeros(1, 64, 64)
    masks[0, 8:16, 16:20] = 1  # the left half of the patch on row 1, column 2
    targets = silhouette_targets(masks, 8)
    assert targets.shape == (1, 64, SILHOUETTE_CELLS**2)
    assert set(torch.nonzero(targets[0].sum(1)).flatten().tolist()) == {1 * 8 + 2}
    cells = targets[0, 10].view(SILHOUETTE_CELLS, SILHOUETTE_CELLS)
    assert torch.equal(cells, torch.tensor([[1.0, 1, 0, 0]] * 4))  # left half covered, every row


def test_the_pose_truth_names_every_joint_the_place_and_the_fade():
    clip = make_clip(4, "jump")
    vectors = torch.tensor([pose_vector(t, fades=False) for t in clip.truth])
    assert vectors.shape == (16, POSE_DIM)
    apex = max(range(16), key=lambda i: clip.truth[i].lift)
    assert vectors[apex, -2] * 64 == pytest.approx(clip.truth[apex].lift) and vectors[0, -2] == 0
    assert torch.equal(vectors[0], vectors[-1])  # a jump lands where it started, and the setting stays
    fading = torch.tensor([pose_vector(t, fades=True) for t in clip.truth])
    assert fading[0, -1] == 0 and fading[-1, -1] == 1 and torch.equal(fading[:, :-1], vectors[:, :-1])


class _Stop(Exception):
    pass


class _StopAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def update(self, task, done, total=None, *, unit="", detail=""):
        if done == self.step:
            raise _Stop

    def note(self, message):
        pass


def test_the_image_encoder_resumes_to_the_same_weights_and_loads_as_a_clip_encoder(text_side, tmp_path):
    text_encoder, tokenizer = text_side
    with pytest.raises(InputError, match="nothing to resume"):
        train_image_encoder(tmp_path, TINY_ENCODER, text_encoder, tokenizer, resume=True)
    train_image_encoder(tmp_path / "whole", TINY_ENCODER, text_encoder, tokenizer)
    with pytest.raises(InputError, match="already holds a training run"):
        train_image_encoder(tmp_path / "whole", TINY_ENCODER, text_encoder, tokenizer)
    with pytest.raises(_Stop):
        train_image_encoder(tmp_path / "cut", TINY_ENCODER, text_encoder, tokenizer, progress=_StopAt(5))
    with pytest.raises(InputError, match="other settings"):
        other = EncoderSettings(**{**TINY_ENCODER.__dict__, "seed": 1})
        train_image_encoder(tmp_path / "cut", other, text_encoder, tokenizer, resume=True)
    train_image_encoder(tmp_path / "cut", TINY_ENCODER, text_encoder, tokenizer, resume=True)
    weights = [(tmp_path / run / "image_encoder" / "model.safetensors").read_bytes() for run in ("whole", "cut")]
    assert weights[0] == weights[1]
    assert (tmp_path / "cut" / "loss.jsonl").read_text() == (tmp_path / "whole" / "loss.jsonl").read_text()
    encoder = load_image_encoder(tmp_path / "cut" / "image_encoder")
    tokens = encoder.encode(make_clip(1, "run").frames()[:2])
    assert tokens.shape == (2, 65, 8)  # CLS + 8 x 8 patches, in the projected space
    with pytest.raises(InputError, match="no toy image encoder here"):
        load_image_encoder(tmp_path)


def test_a_few_steps_on_toy_clips_lower_the_motion_predictors_loss(tmp_path):
    torch.manual_seed(0)
    from transformers import CLIPVisionModelWithProjection

    coarse = EncoderSettings(**{**TINY_ENCODER.__dict__, "patch": 16})  # 17 tokens: a few steps are enough
    encoder = ClipImageEncoder(CLIPVisionModelWithProjection(coarse.vision_config()))
    config = TrainConfig(steps=40, frames=16, batch_size=6, lr=2e-3, num_layers=1, hidden_dim=16, num_heads=2,
                         save_every=20, seed=0, device="cpu")
    result = train_toy_motion(tmp_path, config, clips=6, encoder=encoder)
    assert len(result.log.read_text().splitlines()) == 1 + 40
    clips = load_file(str(tmp_path / "embeddings.safetensors"))["clips"]  # (6, 16, 17, 8)
    trained, _ = load_predictor(result.checkpoint)

    def loss(predicted: torch.Tensor) -> float:
        return float(F.mse_loss(predicted[:, 1:-1], clips[:, 1:-1]))

    untrained = loss(lerp_embeddings(clips[:, 0], clips[:, -1], 16))  # what the zero-initialised output gives
    assert loss(predict_embeddings(clips[:, 0], clips[:, -1], 16, trained)) < 0.8 * untrained
    again = train_toy_motion(tmp_path, TrainConfig(**{**config.__dict__, "steps": 41}), clips=6, encoder=encoder)
    assert again.step == 41  # resumed, from the cached embeddings
    with pytest.raises(InputError, match="trained on other clip embeddings"):
        train_toy_motion(tmp_path, TrainConfig(**{**config.__dict__, "steps": 42}), clips=6, encoder=None)


def test_the_shipped_predictor_beats_slerp_on_held_back_jumps_and_sit_downs_where_the_setting_stays():
    predictor, metadata = load_predictor(shipped_motion_weights())
    scores = evaluate_motion(predictor, load_image_encoder(), per_motion=6, motions=("jump", "sit-down"))
    # Measured on these 12 clips: 42% and 51% where the setting stays (the first encoder's gave 6% and 0%).
    for motion in ("jump", "sit-down"):
        assert scores[motion]["reduction"] >= 0.3 and scores[motion]["same_setting"] >= 0.3, scores
    assert int(metadata["storyd.step"]) > 0


def test_the_error_is_zero_for_the_truth_and_counts_only_the_frames_between():
    truth = torch.randn(2, 5, 3, 4)
    assert embedding_error(truth, truth).abs().max() < 1e-6
    changed = truth.clone()
    changed[:, 0], changed[:, -1] = -truth[:, 0], -truth[:, -1]
    assert embedding_error(changed, truth).abs().max() < 1e-6


def test_the_toy_encoder_and_predictor_are_pinned_in_weights_lock():
    entry = load_lock().get("toy")
    pinned = {f.path: f for f in entry.files}
    root = shipped_motion_weights().parent.parent
    for name in ("image_encoder/config.json", "image_encoder/model.safetensors", "motion/motion.safetensors"):
        assert pinned[name].sha256 == sha256_file(root / name), name
        assert pinned[name].size == (root / name).stat().st_size
    facts = json.loads((root / "motion" / "training.json").read_text())
    assert set(facts["held_back"]) == set(MOTIONS)
    assert Path(shipped_motion_weights()).name == "motion.safetensors"


def test_animate_takes_the_shipped_predictor_for_the_toy_model_only():
    from storyd.animate.run import default_motion_weights

    assert default_motion_weights("toy") == shipped_motion_weights() and shipped_motion_weights().is_file()
    assert default_motion_weights("animatediff-v3") is None


@pytest.mark.parametrize("args", [(), ("--toy", "clips")])
def test_train_motion_learns_from_videos_or_the_toy_world_not_both(cli, tmp_path, args):
    result = cli("train-motion", *args, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: train-motion learns from VIDEOS_DIR or from --toy; pass exactly one of them"

