"""The Semantic Motion Predictor: shapes, the slerp fallback, checkpoints, and training that learns."""

from __future__ import annotations

import math

import pytest
import torch

from storyd.animate.motion import (
    MotionPredictorConfig,
    SemanticMotionPredictor,
    lerp_embeddings,
    load_predictor,
    predict_embeddings,
    save_predictor,
    slerp_embeddings,
)
from storyd.animate.train_motion import TrainConfig, train_motion
from storyd.errors import InputError

TINY = MotionPredictorConfig(embed_dim=16, hidden_dim=32, num_layers=2, num_heads=4, num_tokens=5, max_frames=16)


def ends(batch=2, config=TINY, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, config.num_tokens, config.embed_dim)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_default_config_is_the_papers_with_valid_heads():
    config = MotionPredictorConfig()
    assert (config.num_layers, config.hidden_dim, config.num_heads) == (8, 1024, 16)
    with pytest.raises(ValueError, match="not divisible"):
        MotionPredictorConfig(hidden_dim=1024, num_heads=12)


def test_output_shape_and_untrained_predictor_is_the_interpolation():
    torch.manual_seed(0)
    model = SemanticMotionPredictor(TINY)
    start, end = ends()
    out = model(start, end, 7)
    assert out.shape == (2, 7, 5, 16)
    assert torch.allclose(out, lerp_embeddings(start, end, 7), atol=1e-6)


def test_trained_residual_never_moves_the_endpoints():
    torch.manual_seed(0)
    model = SemanticMotionPredictor(TINY)
    torch.nn.init.normal_(model.out_proj.weight)  # as if trained
    start, end = ends()
    out = model(start, end, 6)
    assert torch.equal(out[:, 0], start) and torch.equal(out[:, -1], end)
    assert not torch.allclose(out[:, 2], lerp_embeddings(start, end, 6)[:, 2])


def test_slerp_keeps_directions_on_the_sphere_and_norms_linear():
    start, end = ends(batch=1)
    path = slerp_embeddings(start, end, 5)
    assert torch.allclose(path[:, 0], start, atol=1e-5) and torch.allclose(path[:, -1], end, atol=1e-5)
    norms = path.norm(dim=-1)  # (1, 5, N)
    expected = torch.stack([(1 - t) * start.norm(dim=-1) + t * end.norm(dim=-1) for t in (0, 0.25, 0.5, 0.75, 1)], 1)
    assert torch.allclose(norms, expected, atol=1e-5)
    # the angle to the start grows evenly: a quarter of the full angle per step
    unit = path / path.norm(dim=-1, keepdim=True)
    angles = torch.acos((unit * unit[:, :1]).sum(-1).clamp(-1, 1))  # (1, 5, N)
    assert torch.allclose(angles[:, 2], angles[:, 4] / 2, atol=1e-4)
    same = slerp_embeddings(start, start, 3)  # equal ends: no NaN
    assert torch.allclose(same, start.unsqueeze(1).expand_as(same), atol=1e-5)
    assert torch.equal(predict_embeddings(start, end, 5, None), path)


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    torch.manual_seed(1)
    model = SemanticMotionPredictor(TINY)
    torch.nn.init.normal_(model.out_proj.weight)
    save_predictor(tmp_path / "m.safetensors", model, extra={"storyd.step": "7"})
    loaded, metadata = load_predictor(tmp_path / "m.safetensors")
    assert loaded.config == TINY and metadata["storyd.step"] == "7"
    start, end = ends()
    assert torch.allclose(loaded(start, end, 4), model.eval()(start, end, 4))
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a storyd motion checkpoint"):
        load_predictor(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="train one with `storyd train-motion`"):
        load_predictor(tmp_path / "missing.safetensors")


def synthetic_clips(count=24, frames=6, tokens=5, dim=16):
    """Clips whose middle frames bow away from the straight line, the same way in every clip."""
    g = torch.Generator().manual_seed(3)
    start, end = torch.randn(count, tokens, dim, generator=g), torch.randn(count, tokens, dim, generator=g)
    bow = 1.5 * torch.randn(1, 1, tokens, dim, generator=g)
    t = torch.linspace(0, 1, frames).view(1, frames, 1, 1)
    return (1 - t) * start[:, None] + t * end[:, None] + torch.sin(math.pi * t) * bow


def test_training_lowers_the_loss_and_resumes(tmp_path, recorder):
    clips = synthetic_clips()
    config = TrainConfig(steps=30, frames=6, batch_size=8, lr=3e-3, num_layers=1, hidden_dim=32, num_heads=4,
                         save_every=10)
    result = train_motion(clips, tmp_path, config)
    assert result.step == 30 and result.last_loss < 0.5 * result.first_loss
    log = (tmp_path / "loss.csv").read_text().splitlines()
    assert log[0] == "step,loss" and len(log) == 31
    model, metadata = load_predictor(result.checkpoint)
    assert metadata["storyd.step"] == "30" and model.config.num_tokens == 5
    # The trained predictor beats plain interpolation on the middle frames.
    with torch.no_grad():
        predicted = model(clips[:, 0], clips[:, -1], 6)
    lerp = lerp_embeddings(clips[:, 0], clips[:, -1], 6)
    assert (predicted - clips)[:, 1:-1].pow(2).mean() < 0.5 * (lerp - clips)[:, 1:-1].pow(2).mean()

    resumed = train_motion(clips, tmp_path, TrainConfig(**{**config.__dict__, "steps": 35}), progress=recorder)
    assert resumed.step == 35 and recorder.notes == [f"resuming from step 30 ({tmp_path / 'checkpoint.safetensors'})"]
    assert recorder.updates[-1] == ("training", 35, 35, "steps", f"loss {resumed.last_loss:.5f}")
    assert resumed.first_loss < result.first_loss  # it continued from the trained weights
    assert len((tmp_path / "loss.csv").read_text().splitlines()) == 36
    with pytest.raises(InputError, match="different model configuration"):
        train_motion(clips, tmp_path, TrainConfig(**{**config.__dict__, "steps": 40, "hidden_dim": 64}))


def test_train_from_videos_encodes_once_and_caches(tmp_path, recorder):
    import numpy as np
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from storyd.animate.encoder import ClipImageEncoder
    from storyd.animate.train_motion import train_motion_from_videos
    from storyd.animate.video import write_mp4

    videos = tmp_path / "videos"
    rng = np.random.default_rng(0)
    base = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    for name, count in [("a.mp4", 9), ("b.mp4", 3)]:  # b is shorter than one clip: skipped
        write_mp4(videos / name, [np.roll(base, i, axis=1) for i in range(count)], fps=8)
    (videos / "readme.txt").write_text("not a video")
    torch.manual_seed(0)
    vision = CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         image_size=16, patch_size=8, projection_dim=8)
    )
    config = TrainConfig(steps=2, frames=4, batch_size=2, num_layers=1, hidden_dim=16, num_heads=2, save_every=1)
    result = train_motion_from_videos(videos, tmp_path / "out", config, encoder=ClipImageEncoder(vision))
    assert result.clips == 2 and result.step == 2  # 9 frames → two clips of 4; b.mp4 too short
    model, _ = load_predictor(result.checkpoint)
    assert (model.config.num_tokens, model.config.embed_dim) == (5, 8)  # 2×2 patches + CLS, projection width
    again = TrainConfig(**{**config.__dict__, "steps": 3})
    train_motion_from_videos(videos, tmp_path / "out", again, encoder=None, progress=recorder)  # cache: no encoder
    assert recorder.notes[0].startswith("using the clip embeddings cached")


def test_train_motion_cli_rejects_a_folder_without_videos(cli, tmp_path):
    (tmp_path / "clips").mkdir()
    result = cli("train-motion", tmp_path / "clips", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "no video files found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
