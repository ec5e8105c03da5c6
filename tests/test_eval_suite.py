"""The suite driver: which stories it renders, where, and with CSA off and on (rendering faked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import invoke

from storyd.errors import InputError
from storyd.eval.suite import run_suite

TOY = Path(__file__).resolve().parent.parent / "stories" / "eval" / "toy"


def test_run_suite_renders_each_story_once_per_mode(tmp_path, monkeypatch, recorder):
    calls = []
    monkeypatch.setattr("storyd.comic.render_comic", lambda story, options, _: calls.append((story.name, options)))
    runs = run_suite(TOY, tmp_path, model="tiny", limit=2, progress=recorder)
    assert runs == [tmp_path / "off", tmp_path / "on"]
    assert [(name, o.consistency["enabled"], o.out_dir.parent.name) for name, o in calls] == [
        ("01-red-hair-walk", False, "off"), ("02-black-hair-errands", False, "off"),
        ("01-red-hair-walk", True, "on"), ("02-black-hair-errands", True, "on")]
    assert {o.model for _, o in calls} == {"tiny"}
    assert recorder.notes == ["CSA off: 01-red-hair-walk", "CSA off: 02-black-hair-errands",
                              "CSA on: 01-red-hair-walk", "CSA on: 02-black-hair-errands"]


def test_eval_suite_command_draws_into_out_and_prints_the_runs(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr("storyd.comic.render_comic", lambda story, options, progress: drawn.append(options.out_dir))
    result = invoke(["eval-suite", str(TOY), "-o", str(tmp_path), "--limit", "1", "--model", "tiny",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"runs": [str(tmp_path / "off"), str(tmp_path / "on")]}
    assert drawn == [tmp_path / "off" / "01-red-hair-walk", tmp_path / "on" / "01-red-hair-walk"]


def test_eval_suite_command_reports_a_bad_folder_in_one_line(tmp_path):
    result = invoke(["eval-suite", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {tmp_path} holds no story files; give a folder of .yaml stories"


def test_run_suite_rejects_unknown_modes_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="unknown CSA mode 'maybe'"):
        run_suite(TOY, tmp_path, csa_modes=("off", "maybe"))
    with pytest.raises(InputError, match="holds no story files"):
        run_suite(tmp_path, tmp_path / "out")
