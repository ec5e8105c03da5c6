"""The suite driver: which stories it renders, where, and with CSA off and on (rendering faked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storyd.errors import InputError
from storyd.eval.suite import run_suite

TOY = Path(__file__).resolve().parent.parent / "stories" / "eval" / "toy"


def test_run_suite_renders_each_story_once_per_mode(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("storyd.comic.render_comic", lambda story, options: calls.append((story.name, options)))
    runs = run_suite(TOY, tmp_path, model="tiny", limit=2)
    assert runs == [tmp_path / "off", tmp_path / "on"]
    assert [(name, o.consistency["enabled"], o.out_dir.parent.name) for name, o in calls] == [
        ("01-red-hair-walk", False, "off"), ("02-black-hair-errands", False, "off"),
        ("01-red-hair-walk", True, "on"), ("02-black-hair-errands", True, "on")]
    assert {o.model for _, o in calls} == {"tiny"}


def test_run_suite_rejects_unknown_modes_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="unknown CSA mode 'maybe'"):
        run_suite(TOY, tmp_path, csa_modes=("off", "maybe"))
    with pytest.raises(InputError, match="holds no story files"):
        run_suite(tmp_path, tmp_path / "out")
