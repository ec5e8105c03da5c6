"""Redoing one panel, schedulers by name, memory options on the CPU path, and `storyd doctor`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support import panel_bytes

from storyd.comic import ComicOptions, render_comic
from storyd.errors import InputError
from storyd.render.memory import GB, MemorySettings, choose_memory
from storyd.story.loader import load_story

STORY = """
model: tiny
seed: 4
characters:
  Mia: a kid
panels:
  - Mia waving
  - Mia running
  - Mia sitting
  - Mia jumping
"""


def test_redo_changes_exactly_one_panel_and_keeps_the_old_one(cli, write_story, tmp_path):
    story = write_story(STORY)
    out = tmp_path / "out"
    render_comic(load_story(story), ComicOptions(out_dir=out))
    before = panel_bytes(out)
    result = cli("comic", story, "-o", out, "--redo", "3", "--redo-seed", "1234", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rendered"] == [2]
    after = panel_bytes(out)
    assert [n for n in before if before[n] != after[n]] == ["003.png"]
    old = list((out / "panels" / "history").glob("003-*.png"))
    assert len(old) == 1 and old[0].read_bytes() == before["003.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["panels"][2]["seed"] == 1234 and manifest["seed_overrides"] == {"2": 1234}
    again = cli("comic", story, "-o", out, "--json")  # the redo sticks
    assert json.loads(again.stdout)["rendered"] == []


def test_redo_without_a_seed_picks_a_new_one_and_bad_numbers_are_refused(cli, write_story, tmp_path):
    story = write_story(STORY)
    out = tmp_path / "out"
    render_comic(load_story(story), ComicOptions(out_dir=out))
    seed_before = json.loads((out / "manifest.json").read_text())["panels"][0]["seed"]
    render_comic(load_story(story), ComicOptions(out_dir=out, redo=1))
    assert json.loads((out / "manifest.json").read_text())["panels"][0]["seed"] != seed_before
    with pytest.raises(InputError, match="panels 1 to 4"):
        render_comic(load_story(story), ComicOptions(out_dir=out, redo=9))
    bad = cli("comic", story, "-o", out, "--redo-seed", "3")
    assert bad.exit_code == 2 and "--redo-seed goes with --redo" in bad.stderr


def test_schedulers_by_name_run_and_change_the_panel(write_story, tmp_path):
    story = load_story(write_story(STORY.replace("  - Mia sitting\n  - Mia jumping\n", "")))
    render_comic(story, ComicOptions(out_dir=tmp_path / "ddim"))
    base = np.asarray(Image.open(tmp_path / "ddim" / "panels" / "002.png"))
    for scheduler in ("euler-a", "dpm++2m-karras"):
        other = render_comic(story, ComicOptions(out_dir=tmp_path / scheduler, scheduler=scheduler))
        assert other.rendered == [0, 1]
        manifest = json.loads((tmp_path / scheduler / "manifest.json").read_text())
        assert manifest["settings"]["scheduler"] == scheduler
        assert not np.array_equal(base, np.asarray(Image.open(tmp_path / scheduler / "panels" / "002.png")))


def test_unknown_scheduler_in_a_story_names_the_line(write_story):
    with pytest.raises(InputError) as info:
        load_story(write_story("scheduler: eular\npanels: [a]\n"))
    assert info.value.line == 1 and "did you mean 'euler'" in info.value.format()


def test_vae_tiling_decodes_a_large_panel_in_tiles_and_keeps_the_picture(write_story, tmp_path, monkeypatch):
    """At 128 px the tiny VAE's latent (32x32) is over its tile (16x16 latents): tiling decodes each panel
    in three rows of three overlapping tiles (the last ones cut at the edge), slicing one panel at a time."""
    from diffusers.models.autoencoders.vae import Decoder

    two_panels = STORY.replace("  - Mia sitting\n  - Mia jumping\n", "").replace("seed: 4", "seed: 4\nsize: 128")
    story = load_story(write_story(two_panels))
    decoded = []
    real = Decoder.forward

    def counted(self, z, *args, **kwargs):
        decoded.append(tuple(z.shape))
        return real(self, z, *args, **kwargs)

    monkeypatch.setattr(Decoder, "forward", counted)
    plain = render_comic(story, ComicOptions(out_dir=tmp_path / "a", memory=MemorySettings(vae_tiling=False)))
    whole, decoded[:] = list(decoded), []
    tiled = render_comic(
        story, ComicOptions(out_dir=tmp_path / "b", memory=MemorySettings(vae_tiling=True, vae_slicing=True))
    )
    assert plain.rendered == tiled.rendered == [0, 1]
    assert {shape[2:] for shape in whole} == {(32, 32)}
    tiles = [(1, 4, h, w) for h in (16, 16, 8) for w in (16, 16, 8)]
    assert decoded == tiles * 2
    a, b, other = (np.asarray(Image.open(tmp_path / d / "panels" / f), dtype=float)
                   for d, f in (("a", "002.png"), ("b", "002.png"), ("a", "001.png")))
    # The random decoder sees across tile edges, so the blended seams differ a little (mean 4 of 255);
    # another picture differs by about 45.
    assert np.abs(a - b).mean() < 6.0 < np.abs(a - other).mean()


def test_memory_choices_follow_free_memory():
    weights = 7 * GB
    big = choose_memory(MemorySettings(), "cuda", weights, 40 * GB)
    mid = choose_memory(MemorySettings(), "cuda", weights, 8 * GB)
    small = choose_memory(MemorySettings(), "cuda", weights, 3 * GB)
    assert (big.offload, mid.offload, small.offload) == ("none", "model", "sequential")
    assert not big.vae_tiling and mid.vae_tiling and small.vae_slicing
    assert choose_memory(MemorySettings(), "cpu", weights, 20 * GB).dtype == "fp32"
    assert choose_memory(MemorySettings(offload="none", vae_tiling=True), "cuda", weights, 3 * GB).vae_tiling
    with pytest.raises(InputError, match="no GPU"):
        choose_memory(MemorySettings(offload="model"), "cpu", weights, 20 * GB)
    with pytest.raises(InputError, match="fp16 is not supported on the CPU"):
        choose_memory(MemorySettings(dtype="fp16"), "cpu", weights, 20 * GB)


def test_doctor_reports_device_choices_and_weights(cli):
    result = cli("doctor", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["device"] == "cpu" and info["memory"]["offload"] == "none" and info["free_bytes"] > 0
    statuses = {w["name"]: w["status"] for w in info["weights"]}
    assert statuses["sdxl"] == "missing"
    assert {"sdxl", "sd15", "toy"} <= set(statuses)


def test_a_scheduler_without_zero_terminal_snr_is_refused_for_a_model_trained_with_it():
    from storyd.render.schedulers import make_scheduler

    config = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
              "beta_end": 0.012, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
              "timestep_spacing": "trailing"}
    assert make_scheduler("euler", config).config.rescale_betas_zero_snr
    with pytest.raises(InputError, match="zero-terminal-SNR"):
        make_scheduler("heun", config)
