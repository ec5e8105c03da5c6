"""Settings resolved once: CSA settings (model <- story <- options), one meaning of --seed, one device policy."""

from __future__ import annotations

import json

import pytest
import torch
from support import invoke

import storyd.plan.settings
from storyd.comic import ComicOptions, render_comic
from storyd.errors import InputError, SettingError
from storyd.plan.presets import get_preset
from storyd.plan.render_plan import plan_story
from storyd.plan.seeds import panel_seed
from storyd.plan.settings import resolve_consistency
from storyd.render.distributed import Launch, rank_device
from storyd.story.loader import load_story
from storyd.story.model import ConsistencySettings

STORY = """
model: tiny
seed: 3
characters:
  Mia: a kid
panels:
  - Mia waving
  - Mia running
  - "[NC] a room"
consistency:
  id_panels: 1
"""


@pytest.fixture
def model_reads_last(monkeypatch):
    """The model's own settings differ from the published ones, as the toy model's do."""
    model = ConsistencySettings(read_step="last", warmup_steps=0)
    monkeypatch.setattr(storyd.plan.settings, "model_consistency", lambda preset: model)


def test_one_option_keeps_the_models_and_the_storys_values(write_story, model_reads_last):
    story = load_story(write_story(STORY))
    settings = resolve_consistency(get_preset("tiny"), story, {"sampling_rate": 0.7})
    assert settings.sampling_rate == (0.7,)  # the option
    assert settings.id_panels == 1  # the story's
    assert (settings.read_step, settings.warmup_steps) == ("last", 0)  # the model's
    assert plan_story(story, consistency={"sampling_rate": (0.7,)}).consistency == settings


def test_a_whole_settings_object_is_refused_as_overrides(write_story):
    with pytest.raises(TypeError, match="hide the model's and the story's"):
        plan_story(load_story(write_story(STORY)), consistency=ConsistencySettings())


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("sampling_rate", (2.0,), "consistency.sampling_rate 2 is out of range"),
        ("sampling_rate", (), "consistency.sampling_rate [] is empty"),
        ("id_panels", 0, "consistency.id_panels 0 is out of range"),
        ("warmup_steps", 1.5, "consistency.warmup_steps 1.5 must be a whole number"),
        ("read_step", "first", "consistency.read_step 'first' is not one of the known values"),
        ("layers", "levels:9", "consistency.layers 'levels:9' is not a layer set"),
        ("reference_guidance", 1, "consistency.reference_guidance 1 is out of range"),
        ("random_skip", "yes", "consistency.random_skip 'yes' must be true or false"),
    ],
)
def test_the_settings_object_checks_its_own_bounds(field, value, words):
    with pytest.raises(SettingError) as info:
        ConsistencySettings(**{field: value})
    assert info.value.field == field and words in info.value.format() and info.value.exit_code == 2


def test_values_are_normalised_so_equal_settings_compare_equal():
    assert ConsistencySettings(sampling_rate=[1, 0.5], skip_late=0) == ConsistencySettings(
        sampling_rate=(1.0, 0.5), skip_late=0.0
    )


def test_an_option_out_of_bounds_is_one_line_naming_the_option(write_story, tmp_path):
    path = write_story(STORY)
    result = invoke(["validate", str(path), "--sampling-rate", "0.5,2"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --sampling-rate 2 is out of range; use values from 0 to 1"
    comic = invoke(["comic", str(path), "-o", str(tmp_path / "out"), "--batch-size", "0"])
    assert comic.exit_code == 2 and "Traceback" not in comic.output
    assert comic.stderr.strip() == "Error: --batch-size 0 is out of range; use a whole number from 1 to 64"
    assert not (tmp_path / "out").exists()


def test_seed_and_a_csa_option_flow_from_the_cli_to_the_manifest(write_story, tmp_path, model_reads_last):
    out = tmp_path / "out"
    result = invoke(["comic", str(write_story(STORY)), "-o", str(out), "--seed", "9",
                                 "--sampling-rate", "0.7", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 9
    assert [p["seed"] for p in manifest["panels"]] == [panel_seed(9, i) for i in range(3)]
    csa = manifest["settings"]["consistency"]
    assert (csa["sampling_rate"], csa["id_panels"], csa["read_step"]) == ([0.7], 1, "last")


def test_validate_prints_the_seeds_comic_draws_with_after_a_redo(write_story, tmp_path):
    story, out = write_story(STORY), tmp_path / "out"
    drawn = invoke(["comic", str(story), "-o", str(out), "--seed", "9", "-q"])
    assert drawn.exit_code == 0, drawn.output
    redo = invoke(["comic", str(story), "-o", str(out), "--seed", "9", "--redo", "2", "--redo-seed", "7",
                               "--json"])
    assert json.loads(redo.stdout)["rendered"] == [1]
    shown = json.loads(invoke(["validate", str(story), "-o", str(out), "--seed", "9", "--json"]).stdout)
    assert [p["seed"] for p in shown["panels"]] == [panel_seed(9, 0), 7, panel_seed(9, 2)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["seed"] for p in manifest["panels"]] == [p["seed"] for p in shown["panels"]]
    elsewhere = json.loads(invoke(["validate", str(story), "-o", str(tmp_path / "new"), "--json"]).stdout)
    assert elsewhere["panels"][1]["seed"] == panel_seed(3, 1)  # a fresh folder: the story's own seeds


def test_seed_with_redo_is_the_base_seed(write_story, tmp_path):
    story, out = load_story(write_story(STORY)), tmp_path / "out"
    render_comic(story, ComicOptions(out_dir=out, seed=5))
    render_comic(story, ComicOptions(out_dir=out, seed=5, redo=1))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 5 and manifest["panels"][1]["seed"] == panel_seed(5, 1)
    assert manifest["panels"][0]["seed"] != panel_seed(5, 0)  # redrawn with a seed derived from that one


@pytest.fixture
def keyframes(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 24), (200 * i, 50, 0)).save(folder / f"{i + 1}.png")
    return folder


def test_animate_takes_its_device_from_the_one_policy(keyframes, tmp_path, monkeypatch):
    import storyd.render.memory
    from storyd.animate import animate
    from storyd.animate.backends import animatediff
    from storyd.animate.interpolate import InterpolateBackend

    chosen = []

    def backend(model, *, device, **_):
        chosen.append(device)
        return InterpolateBackend()

    monkeypatch.setattr(animatediff, "load_animatediff_backend", backend)
    monkeypatch.setattr(storyd.render.memory, "free_memory", lambda device: 80 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    animate(keyframes, tmp_path / "gpu", frames=3, backend="animatediff")
    assert chosen == ["cuda"]  # auto, on a GPU machine: the GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = animate(keyframes, tmp_path / "cpu", frames=3)
    assert result.backend == "interpolate" and "no CUDA GPU here (cpu)" in result.notes[0]
    animate(keyframes, tmp_path / "slow", frames=3, backend="animatediff")
    assert chosen == ["cuda", "cpu"]
    with pytest.raises(InputError, match="device 'cuda' is not available"):
        animate(keyframes, tmp_path / "none", frames=3, device="cuda")


def test_train_motion_takes_its_device_from_the_one_policy(tmp_path, monkeypatch):
    from safetensors import safe_open

    from storyd.animate.train_motion import TrainConfig, train_motion

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = TrainConfig(steps=1, frames=4, batch_size=2, num_layers=1, hidden_dim=16, num_heads=2)
    train_motion(torch.randn(3, 4, 2, 8), tmp_path / "run", config)
    with safe_open(str(tmp_path / "run" / "checkpoint.safetensors"), framework="pt") as saved:
        assert json.loads(saved.metadata()["storyd.train_config"])["device"] == "cpu"  # auto, resolved
    cli = invoke(["train-motion", str(tmp_path), "-o", str(tmp_path / "cli"), "--device", "cuda"])
    assert cli.exit_code == 2
    assert cli.stderr.strip() == "Error: device 'cuda' is not available here; use --device cpu, or auto"


def test_each_launched_rank_gets_its_own_gpu_or_the_requested_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rank_device("auto", 3) == "cuda:3" and rank_device("cuda", 1) == "cuda:1"
    assert rank_device("cuda:0", 3) == "cuda:0" and rank_device("cpu", 3) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device("auto", 3) == "cpu"


def test_the_launch_joins_the_group_on_the_requested_device(monkeypatch):
    import accelerate

    joined = []

    class FakeState:
        process_index, num_processes = 1, 2

        def __init__(self, cpu):
            joined.append(cpu)

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = Launch.from_environment("auto")
    on_cpu = Launch.from_environment("cpu")
    assert (on_gpu.rank, on_gpu.world, on_gpu.device, on_cpu.device) == (1, 2, "cuda:1", "cpu")
    assert joined == [False, True]  # NCCL on the GPU; gloo where --device cpu was asked for


def test_comic_draws_on_the_device_its_launch_chose(write_story, tmp_path, monkeypatch):
    import storyd.comic

    asked = []

    def launch(device):
        asked.append(device)
        return Launch(device="cpu")

    monkeypatch.setattr(storyd.comic.Launch, "from_environment", staticmethod(launch))
    story = load_story(write_story("model: tiny\npanels: ['[NC] a room']\n"))
    render_comic(story, ComicOptions(out_dir=tmp_path / "out", device="mps"))
    assert asked == ["mps"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["settings"]["device"] == "cpu"


def test_train_toy_takes_its_device_from_the_one_policy(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke(["train-toy", "--out", str(tmp_path / "run"), "--device", "cuda", "-q"])
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip() == "Error: device 'cuda' is not available here; use --device cpu, or auto"
