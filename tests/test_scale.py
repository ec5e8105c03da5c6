"""Many stories with one model load; shards and ranks that together draw what one process draws."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import panel_bytes

import storyd.comic
import storyd.plan.render_plan
from storyd.comic import ComicOptions, render_comic
from storyd.errors import InputError
from storyd.render.distributed import Shard, owned_panels, parse_shard
from storyd.story.loader import load_story

STORY = """
model: tiny
seed: 11
characters:
  Mia: a kid with red hair
  Sam: a kid in a green shirt
panels:
  - Mia waving
  - Sam sitting
  - Mia running
  - Sam jumping
  - Mia and Sam standing
  - Mia sitting
  - Sam waving
  - "[NC] a room"
"""


def manifest_panels(out: Path) -> list[dict]:
    entries = json.loads((out / "manifest.json").read_text())["panels"]
    return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    story = root / "two.yaml"
    story.write_text(STORY.lstrip())
    render_comic(load_story(story), ComicOptions(out_dir=root / "out"))
    return story, root / "out"


def test_shard_labels_parse_and_cover_every_panel_once(single):
    with pytest.raises(InputError, match="I/N"):
        parse_shard("3/2")
    assert parse_shard("2/4") == Shard(1, 4)
    plan = storyd.plan.render_plan.plan_story(load_story(single[0]))
    parts = [owned_panels(plan, Shard(i, 3)) for i in range(3)]
    assert sum(len(p) for p in parts) == 8 and set().union(*parts) == set(range(8))


def test_shards_and_merge_give_the_single_run(cli, single, tmp_path):
    story, one = single
    out = tmp_path / "out"
    plan_owned = []
    for label in ("1/2", "2/2"):
        result = cli("comic", story, "-o", out, "--shard", label, "--json", "-q")
        assert result.exit_code == 0, result.output
        plan_owned.append(set(json.loads(result.stdout)["rendered"]))
        assert not (out / "manifest.json").exists()  # a shard writes only its own manifest
    assert plan_owned[0].isdisjoint(plan_owned[1]) and plan_owned[0] | plan_owned[1] == set(range(8))
    merged = cli("comic", story, "-o", out, "--merge", "--json")
    assert merged.exit_code == 0, merged.output
    assert json.loads(merged.stdout)["rendered"] == []
    assert panel_bytes(out) == panel_bytes(one)
    assert manifest_panels(out) == manifest_panels(one)
    assert not list(out.glob("manifest.shard-*"))
    assert (out / "comic.pdf").is_file()


def test_merge_refuses_missing_panels_and_a_rerun_completes_an_interrupted_shard(cli, single, tmp_path, monkeypatch):
    story, one = single
    out = tmp_path / "out"
    from storyd.render.generator import PanelGenerator

    real = PanelGenerator._draw
    calls = []

    def dies_on_second_batch(self, batch, *args):
        calls.append(batch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, batch, *args)

    monkeypatch.setattr(PanelGenerator, "_draw", dies_on_second_batch)
    killed = cli("comic", story, "-o", out, "--shard", "1/2", "-q")
    assert killed.exit_code == 130
    monkeypatch.setattr(PanelGenerator, "_draw", real)
    kept = {e["index"] for e in json.loads((out / "manifest.shard-1-of-2.json").read_text())["panels"]}
    refused = cli("comic", story, "-o", out, "--merge")
    assert refused.exit_code == 2 and "not drawn yet" in refused.stderr
    assert cli("comic", story, "-o", out, "--shard", "2/2", "-q").exit_code == 0
    plan = storyd.plan.render_plan.plan_story(load_story(story))
    rerun = json.loads(cli("comic", story, "-o", out, "--json", "-q").stdout)
    assert set(rerun["rendered"]) == owned_panels(plan, Shard(0, 2)) - kept  # exactly what was missing
    assert panel_bytes(out) == panel_bytes(one)


def test_several_stories_share_one_model_load(cli, tmp_path, monkeypatch):
    folder = tmp_path / "stories"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.yaml").write_text("model: tiny\npanels:\n  - a kid waving\n  - a kid running\n")
    loads = []
    real = storyd.comic.load_pipeline
    monkeypatch.setattr(storyd.comic, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    result = cli("comic", folder, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [len(s["rendered"]) for s in summary["stories"]] == [2, 2] and len(loads) == 1
    assert (tmp_path / "out" / "a" / "panels" / "002.png").is_file()
    assert (tmp_path / "out" / "b" / "comic.pdf").is_file()


def test_two_ranks_under_torchrun_draw_what_one_process_draws(single, tmp_path):
    """Pixel-identical to one process with the same threads per process: torchrun runs each rank on
    one thread, and so do the one-process reference and this session (conftest.py)."""
    story, in_process = single
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "storyd", "comic", str(story), "-o", str(tmp_path / "one"), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = Path(sys.executable).parent / "torchrun"
    two = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "storyd",
            "comic",
            str(story),
            "-o",
            str(tmp_path / "two"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert panel_bytes(tmp_path / "two") == panel_bytes(tmp_path / "one")
    assert manifest_panels(tmp_path / "two") == manifest_panels(tmp_path / "one")
    assert sorted(p.name for p in (tmp_path / "two" / "characters").iterdir()) == ["Mia.safetensors", "Sam.safetensors"]
    assert panel_bytes(in_process) == panel_bytes(tmp_path / "one")
