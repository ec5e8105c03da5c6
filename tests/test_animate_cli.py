"""`storyd animate` end to end on the interpolate backend, and its errors through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support import one_line_error, png_header

from storyd.animate import animate
from storyd.animate.video import read_video


@pytest.fixture
def keyframes(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, color in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        image = np.zeros((40, 56, 3), np.uint8)
        image[5 + 5 * i : 20 + 5 * i, 10 + 8 * i : 25 + 8 * i] = color
        Image.fromarray(image).save(folder / f"{i + 1}.png")
    return folder


def test_animate_writes_transitions_and_joined_story(cli, keyframes, tmp_path):
    out = tmp_path / "out"
    result = cli("animate", keyframes, "-o", out, "--backend", "interpolate", "--frames", "5", "--fps", "10", "--gif",
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backend"] == "interpolate" and data["size"] == [56, 40]
    assert [p.rsplit("/", 1)[1] for p in data["transitions"]] == ["001-002.mp4", "002-003.mp4"]
    for path in data["transitions"]:
        clip = read_video(path)
        assert len(clip) == 5 and clip[0].shape == (40, 56, 3)
    story = read_video(out / "story.mp4")
    assert len(story) == data["total_frames"] == 2 * 4 + 1  # the shared keyframe appears once
    assert len(data["gifs"]) == 3 and all((out / "transitions").glob("*.gif"))
    assert json.loads((out / "animation.json").read_text())["total_frames"] == 9


def test_existing_output_needs_force(cli, keyframes, tmp_path):
    args = ["animate", keyframes, "-o", tmp_path / "o", "--backend", "interpolate", "--frames", "3", "-q"]
    assert cli(*args).exit_code == 0
    again = cli(*args)
    assert again.exit_code == 2
    assert "already exists; pass --force to overwrite" in again.stderr
    assert cli(*args, "--force").exit_code == 0


def test_size_option_resizes(keyframes, tmp_path):
    result = animate(keyframes, tmp_path / "o", backend="interpolate", frames=3, size=(32, 24))
    assert result.size == (32, 24)
    assert read_video(result.story)[0].shape == (24, 32, 3)


@pytest.mark.parametrize(
    ("make", "args", "expected"),
    [
        (lambda d: None, [], "no PNG or JPEG keyframes found"),
        (lambda d: Image.new("RGB", (8, 8)).save(d / "a.png"), [], "only one keyframe found"),
        (
            lambda d: (Image.new("RGB", (8, 8)).save(d / "a.png"), Image.new("RGB", (16, 8)).save(d / "b.png")),
            [],
            "b.png: is 16x8 but a.png is 8x8",
        ),
        (
            lambda d: (Image.new("RGB", (8, 8)).save(d / "a.png"), (d / "b.jpg").write_text("hello")),
            [],
            "b.jpg: keyframe is not a readable image",
        ),
        (
            lambda d: (Image.new("RGB", (8, 8)).save(d / "a.png"), png_header(d / "b.png", 30000, 30000)),
            [],
            "b.png: keyframe is too large to open safely",
        ),
        (
            lambda d: (Image.new("RGB", (8, 8)).save(d / "a.png"), Image.new("RGB", (8, 8)).save(d / "b.png")),
            ["--size", "30x30"],
            "not a positive multiple of 8",
        ),
        (
            lambda d: (Image.new("RGB", (8, 8)).save(d / "a.png"), Image.new("RGB", (8, 8)).save(d / "b.png")),
            ["--backend", "magic"],
            "unknown backend 'magic'",
        ),
    ],
    ids=["empty", "one-frame", "mixed-sizes", "not-an-image", "bomb", "bad-size", "bad-backend"],
)
def test_bad_input_exits_2_with_one_line(cli, tmp_path, make, args, expected):
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder)
    result = cli("animate", folder, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing written before validation passed


def test_help_names_the_backend_default(cli):
    result = cli("animate", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())
    assert "auto: the first video model whose weights are present and that fits the GPU's free memory" in text
    assert cli("train-motion", "--help").exit_code == 0


def test_auto_backend_says_why_it_fell_back(cli, keyframes, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli("animate", keyframes, "-o", tmp_path / "o", "--frames", "3")
    assert result.exit_code == 0, result.output
    assert "interpolate: no CUDA GPU here (cpu), and the video models need one" in result.stderr
    assert "3 transitions" not in result.stdout and "2 transitions (interpolate, 56x40" in result.stdout


@pytest.mark.parametrize(
    "args",
    [["--backend", "animatediff"], ["--backend", "wan-flf2v"], ["--video-model", "wan2.1-vace-1.3b"],
     ["--backend", "interpolate", "--metrics"]],
)
def test_missing_weights_exit_2_and_say_what_to_pull(cli, keyframes, tmp_path, args):
    result = cli("animate", keyframes, "-o", tmp_path / "o", "--frames", "3", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and "storyd weights pull" in result.stderr, result.stderr
    assert not (tmp_path / "o" / "story.mp4").exists()


def test_metrics_come_back_per_transition(keyframes, tmp_path):
    from storyd.animate.metrics import TransitionScorer, conv_features

    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    scorer = TransitionScorer(conv_features(net, taps=(0,)), lambda frames: torch.ones(len(frames), 3))
    result = animate(keyframes, tmp_path / "o", backend="interpolate", frames=4, metrics=scorer)
    assert len(result.metrics) == 2
    first = result.metrics[0]
    assert set(first) == {"clip_token_distance_first", "clip_token_distance_frames", "clipsim_first", "clipsim_frames"}
    assert first["clipsim_frames"] == pytest.approx(1.0) and first["clip_token_distance_first"] > 0


def test_a_comic_folders_transitions_are_prompted_with_the_characters_both_panels_show(keyframes, tmp_path):
    from storyd.animate.interpolate import InterpolateBackend

    described = {"Mia": "a kid with red hair", "Leo": "a kid with a hat"}
    panels = [{"index": i, "file": f"{i + 1}.png", "prompt": f"panel {i + 1}", "characters": names}
              for i, names in enumerate([["Mia"], ["Mia", "Leo"], ["Leo"]])]
    (keyframes / "manifest.json").write_text(json.dumps({"characters": described, "panels": panels}))
    asked = []

    class Recording(InterpolateBackend):
        def render(self, start, end, frames, prompt=None):
            asked.append(prompt)
            return super().render(start, end, frames, prompt)

    animate(keyframes, tmp_path / "out", backend=Recording(), frames=3)
    assert asked == ["a kid with red hair", "a kid with a hat"]


def test_drawing_settings_out_of_range_are_refused_and_elsewhere_than_animatediff_ignored(cli, keyframes, tmp_path):
    one_line_error(cli("animate", keyframes, "-o", tmp_path / "a", "--backend", "interpolate",
                       "--keyframe-attention", "-1"), "--keyframe-attention -1", "0 to turn it off")
    assert not (tmp_path / "a").exists()
    one_line_error(cli("animate", keyframes, "--plan", "--keyframe-attention", "nan"), "--keyframe-attention nan",
                   "0 to turn it off")  # the plan checks it too
    for bad in ("-0.5", "inf"):
        one_line_error(cli("animate", keyframes, "-o", tmp_path / "a", "--noise-temperature", bad),
                       f"--noise-temperature {float(bad)}", "pass e.g. 1")
        one_line_error(cli("animate", keyframes, "--plan", "--noise-temperature", bad),
                       f"--noise-temperature {float(bad)}", "pass e.g. 1")
    assert not (tmp_path / "a").exists()
    result = cli("animate", keyframes, "-o", tmp_path / "b", "--backend", "interpolate", "--frames", "3",
                 "--keyframe-attention", "3", "--noise-temperature", "0.5", "--json")
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    for flag in ("--keyframe-attention", "--noise-temperature"):
        assert f"{flag} is used by the animatediff backend only; ignored" in notes


def test_a_comic_folders_videos_go_to_its_video_folder_and_a_plain_folder_needs_o(cli, keyframes):
    one_line_error(cli("animate", keyframes, "--backend", "interpolate"), "not a storyd comic folder", "-o")
    assert sorted(p.name for p in keyframes.iterdir()) == ["1.png", "2.png", "3.png"]  # nothing written into it
    panels = [{"index": i, "file": f"{i + 1}.png", "prompt": "a square"} for i in range(3)]
    (keyframes / "manifest.json").write_text(json.dumps({"panels": panels}))
    result = cli("animate", keyframes, "--backend", "interpolate", "--frames", "3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["story"] == str(keyframes / "video" / "story.mp4")
