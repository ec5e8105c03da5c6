"""The video backends: registry and choice, refusal, size and aspect, and the Wan pipelines on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support import invoke

from storyd.animate import animate
from storyd.animate.backends.framing import from_native, plan_framing, to_native
from storyd.animate.backends.registry import (
    GB,
    SD15,
    VIDEO_MODELS,
    WAN_720P,
    choose_backend,
    frames_for,
    get_video_model,
    memory_mode,
)
from storyd.animate.video import read_video
from storyd.errors import InputError


def noise(seed: int, size=(48, 32)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def gradient(size: tuple[int, int]) -> Image.Image:
    """A smooth picture, so resizing it down and up again changes little."""
    width, height = size
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8))


# --- refusal and choice ---------------------------------------------------------------------------------------


def test_model_that_ignores_the_last_frame_is_refused():
    with pytest.raises(InputError, match="refused: Wan2.2-TI2V-5B conditions on the first frame only"):
        get_video_model("wan2.2-ti2v-5b")


def test_refused_model_exits_2_through_the_cli(tmp_path):
    for i in range(2):
        noise(i).save(tmp_path / f"{i}.png")
    out = tmp_path / "out"
    result = invoke(["animate", str(tmp_path), "-o", str(out), "--video-model", "wan2.2-ti2v-5b"])
    assert result.exit_code == 2, result.output
    assert "first frame only" in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def present_all(weights):
    return None


def test_auto_without_a_gpu_is_interpolate_and_says_why():
    choice = choose_backend("auto", None, device="cpu", free_bytes=None, present=present_all)
    assert choice.backend == "interpolate" and choice.model is None
    assert choice.reason == "interpolate: no CUDA GPU here (cpu), and the video models need one"


def test_auto_on_a_gpu_takes_the_best_model_that_is_present_and_fits():
    big = choose_backend("auto", None, device="cuda", free_bytes=140 * GB, present=present_all)
    assert (big.backend, big.model.name) == ("wan-flf2v", "wan2.1-flf2v-14b")
    small = choose_backend("auto", None, device="cuda", free_bytes=9 * GB, present=present_all)
    assert small.backend == "wan-vace" and small.reason == "wan-vace with wan2.1-vace-1.3b: weights present, 9 GB free"

    def only_animatediff_present(weights):
        return None if "sd15-diffusers" in weights else "not on this machine"

    fallback = choose_backend("auto", None, device="cuda", free_bytes=140 * GB, present=only_animatediff_present)
    assert fallback.backend == "animatediff"
    none = choose_backend("auto", None, device="cuda", free_bytes=140 * GB, present=lambda w: "missing")
    assert none.backend == "interpolate" and "wan2.1-flf2v-14b weights not present (missing)" in none.reason


def test_explicit_model_sets_the_backend_and_a_mismatch_is_an_error():
    choice = choose_backend("auto", "wan2.1-vace-1.3b", device="cpu", free_bytes=None, present=present_all)
    assert choice.backend == "wan-vace"
    with pytest.raises(InputError, match="runs on the wan-vace backend, not animatediff"):
        choose_backend("animatediff", "wan2.1-vace-1.3b", device="cpu", free_bytes=None, present=present_all)
    with pytest.raises(InputError, match="unknown video model 'wan3'"):
        choose_backend("auto", "wan3", device="cpu", free_bytes=None, present=present_all)


def test_frame_count_rule_and_memory_modes():
    wan, sd = VIDEO_MODELS["wan2.1-flf2v-14b"], VIDEO_MODELS["animatediff-v3"]
    assert [frames_for(wan, n) for n in (2, 5, 16, 17, 81)] == [5, 5, 17, 17, 81]
    assert frames_for(sd, 16) == 16 and frames_for(None, 7) == 7
    assert memory_mode(wan, 140 * GB) == "none" and memory_mode(wan, 48 * GB) == "model"
    assert memory_mode(wan, 16 * GB) == "group" and memory_mode(wan, None, "group") == "group"
    with pytest.raises(InputError, match="unknown offload 'sequential'"):
        memory_mode(wan, None, "sequential")


def test_plan_prints_backend_size_frames_and_memory(tmp_path):
    for i in range(3):
        noise(i, (56, 40)).save(tmp_path / f"{i}.png")
    args = ["animate", str(tmp_path), "-o", str(tmp_path / "o"), "--plan", "--backend", "wan-vace", "--json"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    import json

    info = json.loads(result.stdout)
    assert info["backend"] == "wan-vace" and info["frames"] == 17 and info["transitions"] == 2
    assert info["render_size"][0] % 16 == 0 and info["render_size"][1] % 16 == 0
    assert info["gpu_bytes"] > 0 and info["seconds_per_transition"] > 0
    assert not (tmp_path / "o").exists()


# --- size and aspect ------------------------------------------------------------------------------------------


def test_native_size_keeps_the_area_and_the_multiple():
    square = plan_framing((1024, 1024), SD15)
    assert square.size == (512, 512) and square.box == (0, 0, 512, 512)  # an SDXL panel reaches SD1.5 at 512
    wide = plan_framing((1280, 720), WAN_720P)
    assert wide.size == (1280, 720)


def test_letterbox_round_trips_a_panel_wider_than_the_model_takes():
    panel = gradient((240, 80))  # 3:1, wider than Wan's 16:9
    framing = plan_framing(panel.size, WAN_720P, "letterbox")
    left, top, right, bottom = framing.box
    assert framing.size == (1280, 720) and (left, right) == (0, 1280) and top > 0
    assert abs((right - left) / (bottom - top) - 3) < 0.02
    native = to_native(panel, framing)
    assert native.size == framing.size and np.asarray(native)[:top].max() == 0  # bars, not picture
    back = from_native([np.asarray(native)], framing, panel.size)[0]
    assert back.shape == (80, 240, 3)
    assert np.abs(back.astype(int) - np.asarray(panel).astype(int)).mean() < 3


def test_crop_fills_the_frame_and_comes_back_at_the_comic_aspect():
    panel = gradient((240, 80))
    framing = plan_framing(panel.size, WAN_720P, "crop")
    assert framing.box == (0, 0, *framing.size)
    native = np.asarray(to_native(panel, framing))
    assert native.shape == (720, 1280, 3) and native.min(axis=(0, 1)).max() > 0
    assert from_native([native], framing, panel.size)[0].shape == (80, 240, 3)
    with pytest.raises(InputError, match="unknown fit 'stretch'"):
        plan_framing(panel.size, WAN_720P, "stretch")


# --- Wan on tiny models ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["flf2v", "vace"])
def wan(request):
    from storyd.animate.backends.tiny_wan import tiny_wan_model, tiny_wan_pipeline
    from storyd.animate.backends.wan import WanBackend

    name = {"flf2v": "wan2.1-flf2v-14b", "vace": "wan2.1-vace-1.3b"}[request.param]
    return WanBackend(tiny_wan_pipeline(request.param), tiny_wan_model(name), request.param, steps=2,
                      guidance_scale=1.0, max_sequence_length=16)


def test_wan_frames_follow_the_last_keyframe_and_are_never_the_pasted_keyframes(wan):
    start, end, other = noise(0), noise(1), noise(2)
    clip = wan.render(start, end, 6, "a cat runs")
    assert len(clip) == 9 and clip[0].shape == (32, 48, 3)  # 6 frames asked, 4k+1 = 9 run
    again = wan.render(start, end, 6, "a cat runs")
    assert all(np.array_equal(a, b) for a, b in zip(clip, again))  # seeded: the comparison below means something
    changed = wan.render(start, other, 6, "a cat runs")
    assert all(not np.array_equal(a, b) for a, b in zip(clip[:-1], changed[:-1]))
    for frame in clip[1:-1]:
        assert not np.array_equal(frame, np.asarray(start)) and not np.array_equal(frame, np.asarray(end))


def test_wan_prompt_reaches_the_model(wan):
    start, end = noise(0), noise(1)
    assert not np.array_equal(wan.render(start, end, 5, "a cat runs")[2], wan.render(start, end, 5, "sea sky")[2])


def test_wan_backend_runs_end_to_end_through_animate(wan, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        noise(i, (60, 40)).save(folder / f"{i}.png")
    result = animate(folder, tmp_path / "out", backend=wan, frames=5, fps=4)
    assert result.backend == f"wan-{wan.kind}" and result.frames_per_transition == 5
    clip = read_video(result.transitions[1])
    assert len(clip) == 5 and clip[0].shape == (40, 56, 3)  # the comic's aspect, sides rounded to 8
    assert result.total_frames == 9


def test_vace_conditioning_keeps_the_ends_and_generates_between():
    from storyd.animate.backends.wan import vace_inputs

    first, last = noise(0), noise(1)
    video, mask = vace_inputs(first, last, 5)
    assert video[0] is first and video[-1] is last and len(video) == len(mask) == 5
    assert [np.asarray(m).max() for m in mask] == [0, 255, 255, 255, 0]


def test_wan_loader_reads_a_diffusers_snapshot(wan, tmp_path):
    """load_wan_backend loads the folder layout of the pinned repositories; here it holds the tiny pipeline."""
    from storyd.animate.backends.wan import load_wan_backend

    wan.pipe.save_pretrained(str(tmp_path / "snapshot"))
    notes = []
    loaded = load_wan_backend(wan.model, device="cpu", mode="none", fit="letterbox", seed=0, note=notes.append,
                              folder=tmp_path / "snapshot")
    assert type(loaded.pipe) is type(wan.pipe) and loaded.kind == wan.kind
    assert notes == [f"{wan.model.name}: memory mode none"]
    loaded.steps, loaded.guidance_scale, loaded.max_sequence_length = 2, 1.0, 16
    start, end = noise(0), noise(1)
    for a, b in zip(loaded.render(start, end, 5, "a cat"), wan.render(start, end, 5, "a cat"), strict=True):
        assert np.abs(a.astype(int) - b).max() <= 2  # same weights; float32 rounding may differ by a level


def test_doctor_says_which_backend_animate_would_use(monkeypatch):
    import torch

    from storyd.doctor import diagnose

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = diagnose("cpu", "sd15")
    assert info["animate"] == {"backend": "interpolate", "model": None,
                               "reason": "interpolate: no CUDA GPU here (cpu), and the video models need one"}
