"""The CLI through Typer's test runner, with one end-to-end comic on the embedded tiny model."""

from __future__ import annotations

import json
import shutil

import pytest
from support import REPO, one_line_error, panel_bytes

STORY = """
title: Test Day
model: tiny
seed: 3
characters:
  Mia: a kid with red hair
panels:
  - prompt: Mia standing on the beach
    caption: One.
  - Mia waving on the beach
  - prompt: Mia running in a forest
    dialogue:
      - Mia: Hi!
  - "[NC] a kid sitting in a room"
layout:
  dpi: 50
"""

@pytest.fixture(scope="module")
def rendered(cli, tmp_path_factory):
    """One comic run shared by the tests that only read its output."""
    root = tmp_path_factory.mktemp("comic")
    story = root / "test-day.yaml"
    story.write_text(STORY.lstrip(), encoding="utf-8")
    result = cli("comic", story, "-o", root / "out", "--json")
    assert result.exit_code == 0, result.output
    return story, root / "out", json.loads(result.stdout)


def test_comic_writes_panels_pages_pdf_and_manifest(rendered):
    story, out, summary = rendered
    assert summary["rendered"] == [0, 1, 2, 3] and summary["skipped"] == []
    assert sorted(p.name for p in (out / "panels").glob("*.png")) == ["001.png", "002.png", "003.png", "004.png"]
    assert (out / "comic.pdf").read_bytes().startswith(b"%PDF")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == "tiny" and manifest["story"]["name"] == "test-day"
    assert manifest["characters"] == {"Mia": "a kid with red hair"}  # what `storyd eval`'s segmenter looks for
    assert [p["role"] for p in manifest["panels"]] == ["reference", "reference", "read", "plain"]
    assert manifest["panels"][0]["prompt"] == "a kid with red hair standing on the beach"
    assert all(len(p["input_hash"]) == 64 and p["seed"] >= 0 for p in manifest["panels"])
    assert manifest["pages"] and all((out / p).is_file() for p in manifest["pages"])
    assert "noise" in " ".join(summary["warnings"])


def test_rerun_skips_unchanged_panels_and_redraws_only_what_changed(cli, rendered, tmp_path):
    story, out, _ = rendered
    work = tmp_path / "out"
    shutil.copytree(out, work)
    before = panel_bytes(work)
    again = json.loads(cli("comic", story, "-o", work, "--json").stdout)
    assert again["rendered"] == [] and again["skipped"] == [0, 1, 2, 3]
    edited = tmp_path / "test-day.yaml"
    edited.write_text(STORY.replace("Mia running in a forest", "Mia jumping in a forest").lstrip(), encoding="utf-8")
    manifest = json.loads((work / "manifest.json").read_text())
    manifest["story"]["path"] = str(edited.resolve())  # the same story, moved
    (work / "manifest.json").write_text(json.dumps(manifest))
    third = json.loads(cli("comic", edited, "-o", work, "--json").stdout)
    assert third["rendered"] == [2]
    after = panel_bytes(work)
    assert [n for n in before if before[n] != after[n]] == ["003.png"]
    assert len(list((work / "panels" / "history").glob("003-*.png"))) == 1  # the old version is kept


def test_an_interrupted_run_keeps_finished_panels(cli, tmp_path, monkeypatch):
    story = tmp_path / "s.yaml"
    story.write_text(STORY.lstrip(), encoding="utf-8")
    from storyd.render.generator import PanelGenerator

    real = PanelGenerator._draw
    calls = []

    def flaky(self, batch, *args):
        calls.append(batch.mode)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, batch, *args)

    monkeypatch.setattr(PanelGenerator, "_draw", flaky)
    result = cli("comic", story, "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 130
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [p["index"] for p in manifest["panels"]] == [0, 1]
    monkeypatch.setattr(PanelGenerator, "_draw", real)
    resumed = json.loads(cli("comic", story, "-o", tmp_path / "out", "--json").stdout)
    assert resumed["rendered"] == [2, 3] and resumed["skipped"] == [0, 1]


def test_force_redraws_everything(cli, rendered, tmp_path):
    story, out, _ = rendered
    shutil.copytree(out, tmp_path / "out")
    again = json.loads(cli("comic", story, "-o", tmp_path / "out", "--json", "--force", "--no-csa").stdout)
    assert again["rendered"] == [0, 1, 2, 3]


def test_a_foreign_folder_is_not_overwritten(cli, tmp_path):
    story = tmp_path / "s.yaml"
    story.write_text(STORY.lstrip(), encoding="utf-8")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    result = cli("comic", story, "-o", tmp_path / "mine")
    assert result.exit_code == 2
    assert "not a storyd output folder" in result.stderr and "--force" in result.stderr
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_bad_story_is_one_line_exit_2_no_traceback(cli, write_story):
    path = write_story("panels:\n  - prompt: a\n    sead: 3\n")
    result = cli("comic", path)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {path}:3:5: unknown key 'sead' in panel 1; did you mean 'seed'?"
    assert "Traceback" not in result.output


def test_bad_option_is_exit_2(cli, write_story):
    path = write_story(STORY)
    result = cli("validate", path, "--sampling-rate", "lots")
    assert result.exit_code == 2 and "--sampling-rate 'lots'" in result.stderr


def test_a_bad_read_step_is_exit_2(cli, write_story):
    result = cli("validate", write_story(STORY), "--read-step", "first")
    assert result.exit_code == 2 and "--read-step 'first'" in result.stderr and "same, last" in result.stderr


def test_a_reference_guidance_of_1_or_less_is_exit_2(cli, write_story, tmp_path):
    result = cli("comic", write_story(STORY), "--out", tmp_path / "out", "--reference-guidance", "1")
    assert result.exit_code == 2 and "--reference-guidance 1 is out of range" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_csa_options_override_the_story_and_the_model(cli, write_story):
    plain = json.loads(cli("validate", write_story(STORY), "--json").stdout)
    changed = json.loads(cli("validate", write_story(STORY), "--json", "--id-panels", "1").stdout)
    assert plain["references"] == {"Mia": [1, 2]} and changed["references"] == {"Mia": [1]}


def test_validate_json_prints_the_plan(cli, write_story):
    result = cli("validate", write_story(STORY), "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["references"] == {"Mia": [1, 2]}
    assert [p["role"] for p in plan["panels"]] == ["reference", "reference", "read", "plain"]
    assert plan["panels"][2]["prompt"] == "a kid with red hair running in a forest"
    assert plan["estimate"]["bank_bytes"] > 0 and plan["estimate"]["seconds"] > 0


def test_validate_real_preset_needs_no_weights(cli):
    story = REPO / "stories" / "lighthouse-sdxl.yaml"
    plan = json.loads(cli("validate", story, "--json").stdout)
    assert plan["model"] == "sdxl" and plan["width"] == 1024
    assert plan["estimate"]["bank_bytes"] > 1e9  # SDXL banks are large: the reason they live in host memory
    last = json.loads(cli("validate", story, "--json", "--read-step", "last").stdout)
    assert last["estimate"]["bank_bytes"] * (plan["steps"] - 1) == plan["estimate"]["bank_bytes"]  # warm-up 1


def test_validate_sizes_banks_in_the_dtype_the_run_draws_in(cli):
    """Banks hold the UNet's activations, so they take its dtype: bf16 on the CPU halves them, fp32 on a GPU
    doubles them (the full-size test compares the estimate with the bank an SDXL run saves)."""
    story = REPO / "stories" / "lighthouse-sdxl.yaml"

    def bank(*args: str) -> int:
        result = cli("validate", story, "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["estimate"]["bank_bytes"]

    auto = bank("--device", "cpu")
    assert bank("--device", "cpu", "--dtype", "fp32") == auto == 2 * bank("--device", "cpu", "--dtype", "bf16")
    assert bank("--device", "cuda", "--dtype", "fp32") == auto == 2 * bank("--device", "cuda")
    one_line_error(cli("validate", story, "--dtype", "fp8"), "unknown dtype 'fp8'")


def test_convert_writes_yaml_and_never_overwrites(cli, tmp_path):
    src = tmp_path / "snow.txt"
    shutil.copy(REPO / "stories" / "snow-day.txt", src)
    assert cli("convert", src).exit_code == 0
    assert "Tom:" in (tmp_path / "snow.yaml").read_text()
    again = cli("convert", src)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert cli("validate", tmp_path / "snow.yaml").exit_code == 0


def test_every_command_has_help(cli):
    import typer.main

    from storyd.cli.app import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert command.help or command.short_help, name
        assert cli(name, "--help").exit_code == 0
