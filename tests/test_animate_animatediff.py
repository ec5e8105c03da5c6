"""The animatediff backend (AnimateDiff + SparseCtrl + per-frame IP-Adapter Plus) on tiny models from configs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from storyd.animate import animate
from storyd.animate.backends.animatediff import own_frame_tokens, sliding_windows
from storyd.animate.backends.framing import plan_framing
from storyd.animate.backends.registry import VIDEO_MODELS
from storyd.animate.backends.tiny_animatediff import TINY_NATIVE, tiny_animatediff_backend
from storyd.animate.motion import MotionPredictorConfig, SemanticMotionPredictor
from storyd.animate.video import read_video
from storyd.errors import InputError


def noise(seed: int, size=(32, 32)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def differs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.fixture(scope="module")
def backend():
    return tiny_animatediff_backend(steps=2)


def test_the_frames_between_follow_the_last_keyframe_and_the_ends_are_the_keyframes_through_the_vae(backend):
    start, end, other = noise(0), noise(1), noise(2)
    clip = backend.render(start, end, 6, "a cat runs")
    assert len(clip) == 6 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in clip)
    again = backend.render(start, end, 6, "a cat runs")
    assert all(np.array_equal(a, b) for a, b in zip(clip, again, strict=True))  # seeded: comparisons mean something
    changed = backend.render(start, other, 6, "a cat runs")
    assert all(not np.array_equal(a, b) for a, b in zip(clip[1:-1], changed[1:-1], strict=True))
    assert np.array_equal(clip[0], changed[0])  # held: the first frame is the first keyframe's, whatever comes last
    for frame in clip:  # generated, not pasted: no frame is either keyframe
        assert not np.array_equal(frame, np.asarray(start)) and not np.array_equal(frame, np.asarray(end))
    free = replace(backend, hold_keyframes=False).render(start, other, 6, "a cat runs")
    assert not np.array_equal(free[0], changed[0])  # without the hold the first frame is drawn, and moves


def test_the_hold_puts_the_keyframes_clean_or_at_the_noise_level_of_the_next_step(backend):
    from storyd.animate.backends.animatediff import KeyframeHold

    pipe = backend.pipe
    pipe.scheduler.set_timesteps(4)
    keys = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    latents = torch.randn(1, 4, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    hold = KeyframeHold(keys, seed=3)
    noised = hold(pipe, 0, pipe.scheduler.timesteps[0], {"latents": latents})["latents"]
    assert torch.equal(noised[:, :, 1:-1], latents[:, :, 1:-1])  # the frames between are the sampler's
    expected = pipe.scheduler.add_noise(keys, torch.randn(keys.shape, generator=torch.Generator().manual_seed(3)),
                                        pipe.scheduler.timesteps[1:2])
    assert torch.allclose(noised[:, :, 0], expected[:, :, 0]) and torch.allclose(noised[:, :, -1], expected[:, :, 1])
    clean = hold(pipe, 3, pipe.scheduler.timesteps[3], {"latents": latents})["latents"]  # after the last step
    assert torch.equal(clean[:, :, 0], keys[:, :, 0]) and torch.equal(clean[:, :, -1], keys[:, :, 1])
    held = KeyframeHold(keys, seed=3, noised=False)(pipe, 0, pipe.scheduler.timesteps[0], {"latents": latents})
    held = held["latents"]  # the backend's default: clean from the first step on
    assert torch.equal(held[:, :, 0], keys[:, :, 0]) and torch.equal(held[:, :, -1], keys[:, :, 1])
    assert torch.equal(held[:, :, 1:-1], latents[:, :, 1:-1])


def test_the_noise_temperature_scales_the_pipelines_own_starting_noise(backend, monkeypatch):
    start, end = noise(0), noise(1)
    base = backend.render(start, end, 5, "a cat")
    started = {}
    draw = type(backend.pipe).prepare_latents

    def seen(pipe, *args, **kwargs):
        started["latents"] = latents = draw(pipe, *args, **kwargs)
        return latents

    monkeypatch.setattr(type(backend.pipe), "prepare_latents", seen)
    own = replace(backend, noise_temperature=1.0)
    own.starting_noise = lambda *args: None  # the pipeline draws from the seed itself
    assert all(np.array_equal(a, b) for a, b in zip(base, own.render(start, end, 5, "a cat"), strict=True))
    drawn = started["latents"]
    cooler = replace(backend, noise_temperature=0.25).render(start, end, 5, "a cat")
    assert torch.allclose(started["latents"], 0.25 * drawn)  # the same draw, scaled
    assert differs(cooler[2], base[2]) > 1


def test_switching_off_sparsectrl_or_the_image_prompt_changes_the_frames(backend):
    start, end = noise(0), noise(1)
    base = backend.render(start, end, 5, "a cat")
    for off in (replace(backend, control_scale=0.0), replace(backend, image_prompt_scale=0.0)):
        clip = off.render(start, end, 5, "a cat")
        assert all(not np.array_equal(a, b) for a, b in zip(base[1:-1], clip[1:-1], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(base, backend.render(start, end, 5, "a cat"), strict=True))


def test_frame_f_is_steered_by_its_own_tokens_most(backend, monkeypatch):
    start, end = noise(0), noise(1)
    plain = replace(backend, guidance_scale=1.0, steps=1)
    tokens = plain.frame_tokens(start, end, 6)  # (1, L, N, C): no unconditional half without guidance
    assert tokens.shape[:2] == (1, 6)
    base = plain.render(start, end, 6, "a cat")
    for f in (2, 4):
        moved = tokens.clone()
        moved[0, f] = torch.randn(moved.shape[2:], generator=torch.Generator().manual_seed(f)) * 3
        monkeypatch.setattr(plain, "frame_tokens", lambda first, last, frames, moved=moved: moved)
        clip = plain.render(start, end, 6, "a cat")
        change = [differs(a, b) for a, b in zip(base, clip, strict=True)]
        assert change[f] > 2 * max(c for i, c in enumerate(change) if i != f), change  # its own frame, by far


def test_each_unet_row_keeps_its_own_frame():
    tokens = torch.arange(2 * 3 * 3).float().view(2, 3, 3, 1, 1).repeat_interleave(3, dim=0)  # (B·F, F, F, 1, 1)
    rows = own_frame_tokens(tokens.flatten(2, 3))  # as the UNet repeats (B, F, T, D) images to every frame
    assert [int(r[0, 0]) for r in rows] == [0, 3, 6, 9, 12, 15]  # video b, frame f: its own image
    with pytest.raises(ValueError, match="not a whole number of 4-frame videos"):
        own_frame_tokens(torch.zeros(6, 4, 2, 2))


def test_long_transitions_run_in_sliding_windows_past_the_motion_modules_length(backend):
    start, end = noise(0), noise(1)
    blocks = [m for m in backend.pipe.unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    with sliding_windows(backend.pipe, 40, 16, 4):
        windowed = {type(m).__name__ for m in backend.pipe.controlnet.modules()}
        assert "FreeNoiseTransformerBlock" in windowed and "BasicTransformerBlock" in windowed  # spatial ones stay
    assert [m for m in backend.pipe.unet.modules() if type(m).__name__ == "BasicTransformerBlock"] == blocks
    clip = replace(backend, steps=1).render(start, end, 40, "a cat")  # the tiny motion modules know 32 positions
    assert len(clip) == 40 and not np.array_equal(clip[20], clip[21])
    with pytest.raises(RuntimeError, match=r"size of tensor a \(40\) must match the size of tensor b \(32\)"):
        replace(backend, steps=1, window=64).render(start, end, 40, "a cat")  # no windows: past what they know


def test_size_and_aspect_round_trip(backend):
    for size in ((48, 32), (96, 32), (24, 40)):  # inside the trained aspects, wider (letterbox), taller
        framing = plan_framing(size, TINY_NATIVE, backend.fit)
        assert framing.size[0] % 8 == 0 and framing.size[1] % 8 == 0
        clip = replace(backend, steps=1).render(noise(0, size), noise(1, size), 3, "a cat")
        assert all(frame.shape == (size[1], size[0], 3) for frame in clip)
    cropped = replace(backend, steps=1, fit="crop").render(noise(0, (96, 32)), noise(1, (96, 32)), 3, "a cat")
    assert cropped[1].shape == (32, 96, 3)


def test_a_motion_predictor_must_predict_ip_adapter_plus_tokens(backend):
    start, end = noise(0), noise(1)

    def predictor(width: int, tokens: int = 5) -> SemanticMotionPredictor:
        config = MotionPredictorConfig(embed_dim=width, hidden_dim=16, num_layers=1, num_heads=2, num_tokens=tokens,
                                       max_frames=8)
        return SemanticMotionPredictor(config).eval()

    fitting = replace(backend, predictor=predictor(16), steps=1)  # the tiny encoder: 2x2 patches + CLS, 16 wide
    assert len(fitting.render(start, end, 5)) == 5
    with pytest.raises(InputError, match="more than the motion predictor's 8"):
        fitting.render(start, end, 9)
    with pytest.raises(InputError, match="takes 5 tokens of width 32; IP-Adapter Plus takes 5 of width 16"):
        replace(backend, predictor=predictor(32)).render(start, end, 5)


def test_animate_runs_the_backend_end_to_end(backend, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        noise(i, (56, 40)).save(folder / f"{i}.png")
    result = animate(folder, tmp_path / "out", backend=backend, frames=4, fps=4)
    assert result.backend == "animatediff" and result.frames_per_transition == 4
    clip = read_video(result.transitions[1])
    assert len(clip) == 4 and clip[0].shape == (40, 56, 3)
    assert result.total_frames == 7


def test_storyd_animate_loads_the_backend_from_the_weights_store(cli, tmp_path, monkeypatch):
    """`storyd animate DIR --backend animatediff`: the real loader, on tiny weights registered under the lock names."""
    from storyd import weights
    from storyd.animate.backends import registry
    from storyd.animate.backends.tiny_animatediff import tiny_animatediff_model, write_tiny_snapshots

    lock = weights.load_lock()
    for name, folder in write_tiny_snapshots(tmp_path / "weights").items():
        weights.add(lock.get(name), folder, allow_unpinned=True)
    monkeypatch.setitem(registry.VIDEO_MODELS, "animatediff-v3", tiny_animatediff_model())
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        noise(i, (40, 32)).save(frames / f"{i}.png")
    out = tmp_path / "out"
    result = cli("animate", frames, "-o", out, "--backend", "animatediff", "--frames", "4", "--json")
    assert result.exit_code == 0, result.output
    clip = read_video(out / "transitions" / "001-002.mp4")
    assert len(clip) == 4 and clip[0].shape == (32, 40, 3)
    assert "animatediff-v3: memory mode none" in result.stderr
    cooler = cli("animate", frames, "-o", out, "--backend", "animatediff", "--frames", "4", "--noise-temperature",
                 "0.25", "--force", "--json")
    assert cooler.exit_code == 0, cooler.output
    assert differs(read_video(out / "transitions" / "001-002.mp4")[1], clip[1]) > 1  # the option reached the loader


def test_plan_says_when_a_transition_runs_in_windows(cli, tmp_path):
    for i in range(2):
        noise(i, (40, 32)).save(tmp_path / f"{i}.png")
    args = ["animate", tmp_path, "-o", tmp_path / "o", "--plan", "--backend", "animatediff", "--json"]
    short, long = cli(*args, "--frames", "16"), cli(*args, "--frames", "24")
    assert short.exit_code == 0 and long.exit_code == 0, long.output
    assert not any("sliding windows" in line for line in json.loads(short.stdout)["lines"])
    assert "24 frames is more than the 16 animatediff-v3 was trained on: its motion modules run in sliding " \
           "windows of 16" in json.loads(long.stdout)["lines"]



def test_plan_memory_is_the_measured_peak_and_grows_past_the_motion_window(cli, tmp_path):
    for i in range(2):
        noise(i, (40, 32)).save(tmp_path / f"{i}.png")
    args = ["animate", tmp_path, "-o", tmp_path / "o", "--plan", "--backend", "animatediff", "--json",
            "--offload", "none"]
    on, off, longer = (json.loads(cli(*args, *more).stdout) for more in
                       ([], ["--keyframe-attention", "0"], ["--frames", "24"]))
    model = VIDEO_MODELS["animatediff-v3"]
    # measured with keyframe attention on, which did not move the peak
    assert on["gpu_bytes"] == model.peak_bytes["none"] == off["gpu_bytes"]
    # the motion modules run in windows of 16, the spatial layers over all 24 frames at once: 8 frames' more
    assert longer["gpu_bytes"] == on["gpu_bytes"] + 8 * model.frame_bytes
    assert any(line.startswith("memory mode none: about 12.8 GB") for line in on["lines"])


def test_frames_are_decoded_a_few_at_a_time_to_the_same_pictures():
    pipe = tiny_animatediff_backend().pipe
    latents = torch.randn(1, 4, 10, 16, 16, generator=torch.Generator().manual_seed(0))
    calls = []
    decode = pipe.vae.decode
    pipe.vae.decode = lambda z, *a, **k: calls.append(z.shape[0]) or decode(z, *a, **k)
    chunked = pipe.decode_latents(latents)
    del pipe.vae.decode
    whole = super(type(pipe), pipe).decode_latents(latents)  # diffusers' own: every frame in one VAE call
    assert calls == [4, 4, 2] and pipe.decode_chunk == 4  # the peak no longer grows with the frame count
    assert chunked.shape == whole.shape == (1, 3, 10, 32, 32)
    assert torch.allclose(chunked, whole, atol=1e-6)
