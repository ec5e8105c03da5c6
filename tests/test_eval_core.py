"""storyd eval without metric models: reading folders, errors, the bootstrap, the toy metrics."""

from __future__ import annotations

import json
import math

import pytest
from eval_support import solid, write_story_run

from storyd.errors import InputError
from storyd.eval import evaluate, load_run, select_metrics
from storyd.eval.runs import identity_pairs
from storyd.eval.stats import bootstrap, paired_difference
from storyd.eval.toy_metrics import parse_toy_prompt, toy_scores
from storyd.toy.captions import describe, named_attributes, write_caption
from storyd.toy.world import CharacterLook, Figure, Scene


def one_line_error(cli, args) -> str:
    result = cli("eval", *args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_folder_that_is_not_a_storyd_output_is_exit_2_naming_it(cli, tmp_path):
    (tmp_path / "photos").mkdir()
    line = one_line_error(cli, [str(tmp_path / "photos")])
    assert str(tmp_path / "photos") in line and "not a storyd output folder" in line and "storyd comic -o" in line


def test_missing_folder_broken_manifest_and_missing_panel(cli, tmp_path):
    assert "is not a folder" in one_line_error(cli, [str(tmp_path / "nope")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{", encoding="utf-8")
    assert "not valid JSON" in one_line_error(cli, [str(bad)])
    run = write_story_run(tmp_path / "run", [(solid((1, 2, 3)), "a kid", ["A"])])
    (run / "panels" / "001.png").unlink()
    line = one_line_error(cli, [str(run)])
    assert "panels/001.png is missing" in line and "storyd comic" in line


def test_unknown_metric_suggests_the_name():
    with pytest.raises(InputError, match="did you mean 'dino-i'"):
        select_metrics("dino-j")
    assert select_metrics("clip-t, dino-i") == (["clip-t", "clipscore", "dino-i"], True)
    assert select_metrics("auto")[1] is False


def test_a_folder_of_outputs_is_one_run_of_many_stories(tmp_path):
    for name in ("b", "a"):
        write_story_run(tmp_path / "off" / name, [(solid((9, 9, 9)), "x", ["A"])] * 2, csa=False)
    run = load_run(tmp_path / "off")
    assert [s.name for s in run.stories] == ["a", "b"] and run.csa == "off"


def test_identity_pairs_are_panels_sharing_a_character(tmp_path):
    img = solid((0, 0, 0))
    run = load_run(write_story_run(tmp_path / "r", [(img, "p", ["A"]), (img, "p", ["B"]), (img, "p", ["A", "B"]),
                                                     (img, "p", [])]))
    assert identity_pairs(run.stories[0]) == [(0, 2), (1, 2)]


def test_toy_metrics_named_on_non_toy_runs_is_an_error(cli, tmp_path):
    run = write_story_run(tmp_path / "r", [(solid((0, 0, 0)), "a kid", ["A"])] * 2, model="tiny")
    assert "no run was drawn by it" in one_line_error(cli, [str(run), "--metrics", "toy"])


def test_bootstrap_covers_the_mean_reproduces_and_shrinks_with_more_stories():
    import numpy as np

    rng = np.random.default_rng(1)
    small, large = rng.normal(0.5, 0.1, 8).tolist(), rng.normal(0.5, 0.1, 128).tolist()
    a = bootstrap(small)
    assert a.low < a.mean < a.high and a.n == 8
    assert bootstrap(small) == a
    b = bootstrap(large)
    assert (b.high - b.low) < (a.high - a.low) / 2
    assert bootstrap([0.3]).low is None and math.isnan(bootstrap([float("nan")]).mean)


def test_paired_difference_sees_a_shift_that_overlapping_intervals_hide():
    import numpy as np

    base = np.random.default_rng(2).uniform(0.2, 0.8, 10)
    a = {f"s{i}": float(v) for i, v in enumerate(base)}
    b = {k: v + 0.05 for k, v in a.items()}
    diff = paired_difference(a, b)
    assert diff.mean == pytest.approx(0.05) and diff.low > 0
    assert bootstrap(a.values()).high > bootstrap(b.values()).low  # unpaired intervals overlap


LOOK = CharacterLook(hair_colour="red", hair_style="long", skin="tan", shirt_colour="orange", shirt_pattern="striped",
                     trousers="grey", hat=True, glasses=False)


def test_parse_toy_prompt_recovers_what_captions_name():
    other = CharacterLook(hair_colour="black", glasses=True)
    scene = Scene("snow", (Figure(LOOK, "running"), Figure(other, "waving")))
    named = {"setting": True, "figures": [{"attrs": list(LOOK.as_dict()), "action": True},
                                          {"attrs": ["hair_colour", "glasses"], "action": True}]}
    assert parse_toy_prompt(write_caption(scene, named)) == named_attributes(scene, named)
    assert parse_toy_prompt(describe(LOOK, ["hat", "glasses"]) + " sitting in a room") == {
        "setting": "room", "figures": [{"hat": True, "glasses": False, "action": "sitting"}]}


class FakeReader:
    """Reads each image by its top-left colour: red pixel -> a kid in a red shirt, else blue."""

    def read(self, images):
        out = []
        for im in images:
            shirt = "red" if im.getpixel((0, 0))[0] > 128 else "blue"
            out.append({"setting": "beach", "count": 1,
                        "figures": [{**LOOK.as_dict(), "shirt_colour": shirt, "action": "standing"}]})
        return out


def test_toy_scores_agreement_on_free_attributes_and_adherence(tmp_path):
    red, blue = solid((250, 0, 0)), solid((0, 0, 250))
    prompt = "a kid with long red hair standing on the beach"
    story = load_run(write_story_run(tmp_path / "r", [(red, prompt, ["A"]), (red, prompt, ["A"]),
                                                      (blue, prompt, ["A"])], model="toy")).stories[0]
    scores = toy_scores(story, story.load_images(), FakeReader())
    assert scores["toy-identity"] == pytest.approx(1 / 3)  # shirt colour is free: only pair (0, 1) agrees
    assert scores["toy-adherence"] == 1.0
    shirt_named = load_run(write_story_run(tmp_path / "s", [(red, "a kid in a red shirt", ["A"]),
                                                            (blue, "a kid in a red shirt", ["A"])],
                                           model="toy")).stories[0]
    scores = toy_scores(shirt_named, shirt_named.load_images(), FakeReader())
    assert scores["toy-identity"] == 1.0 and scores["toy-adherence"] == 0.5


def test_evaluate_toy_metrics_with_a_reader_and_no_other_models(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("storyd.eval.toy_metrics.load_reader", lambda: FakeReader())
    prompt = "a kid with red hair standing on the beach"
    for k in range(3):
        write_story_run(tmp_path / "on" / f"s{k}", [(solid((250, 0, 0)), prompt, ["A"])] * 4, model="toy")
    result = cli("eval", tmp_path / "on", "--json", "--weights-dir", tmp_path / "w")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["metrics"]) == {"toy-identity", "toy-adherence"}
    assert data["metrics"]["toy-identity"]["runs"][0] == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3}
    assert {s["metric"] for s in data["skipped"]} == {"clip-t", "clipscore", "clip-i", "dino-i", "dreamsim"}
    assert "skipped clip-t, clipscore, clip-i:" in result.stderr


def test_no_metric_model_at_all_is_exit_2(cli, tmp_path):
    run = write_story_run(tmp_path / "r", [(solid((0, 0, 0)), "a kid", ["A"])] * 2)
    line = one_line_error(cli, [str(run), "--weights-dir", str(tmp_path / "w")])
    assert "nothing can be scored" in line and "storyd weights pull clip-vit-b-32" in line
    assert evaluate  # the public API is importable from storyd.eval
