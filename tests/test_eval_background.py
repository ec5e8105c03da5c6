"""Background removal before the identity metrics: CLIPSeg on a tiny model, the key as fallback, the report."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from eval_support import save_model_folder, solid, tiny_clip, tiny_clipseg, write_story_run
from PIL import Image

from storyd.eval import evaluate, protocol
from storyd.eval.background import BackgroundRemover, ClipSegSegmenter, panel_queries
from storyd.eval.runs import load_story_run
from storyd.toy import world
from storyd.weights import load_lock

RED = (220, 30, 30)


@pytest.fixture(scope="module")
def clip_b16(tmp_path_factory, tokenizer):
    """A weights folder holding a tiny CLIP as both CLIP models (cs-clip-i and clip-i), and no CLIPSeg."""
    root = tmp_path_factory.mktemp("weights")
    model = tiny_clip(tokenizer, [(solid(RED), "a red square"), (solid((30, 30, 220)), "a blue square"),
                                  (solid((30, 200, 30)), "a green square")])
    for name in (protocol.CLIP_B16_MODEL, protocol.CLIP_MODEL):
        save_model_folder(model, root / name, load_lock().get(name), tokenizer)
    return root


def _with_clipseg(weights, tmp_path, tokenizer, logit):
    """A copy of ``weights`` (linked) plus a tiny CLIPSeg whose every pixel scores ``logit``."""
    root = tmp_path / f"weights{logit:+.0f}"
    root.mkdir()
    for folder in weights.iterdir():
        (root / folder.name).symlink_to(folder, target_is_directory=True)
    model, processor = tiny_clipseg(tokenizer, logit)
    save_model_folder(model, root / protocol.BACKGROUND_MODEL, load_lock().get(protocol.BACKGROUND_MODEL), processor)
    return root


def _same_panels(root, model="tiny"):
    """One story of three identical flat panels: alike unless noise is put behind them."""
    return write_story_run(root, [(solid(RED), "a kid on the beach", ["Mia"])] * 3, model=model, name="s",
                           descriptions={"Mia": "a kid with red hair"})


def test_tiny_clipseg_gives_a_mask_of_the_images_size(tokenizer):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    segmenter = ClipSegSegmenter(*tiny_clipseg(tokenizer))
    probability = segmenter.foreground(image, ["a kid with red hair", "a dog"])
    assert probability.shape == (40, 56) and 0.0 <= probability.min() and probability.max() <= 1.0
    assert np.ptp(probability) > 0.1  # a map, not a constant
    mask = segmenter.background_mask(image, ["a kid with red hair"])
    assert mask.shape == (40, 56) and mask.dtype == bool
    assert not ClipSegSegmenter(*tiny_clipseg(tokenizer, 8.0)).background_mask(image, ["a kid"]).any()
    assert ClipSegSegmenter(*tiny_clipseg(tokenizer, -8.0)).background_mask(image, ["a kid"]).all()


class _TruthSegmenter:
    """Stands in for CLIPSeg: the toy world's own figure mask, and the queries it was asked."""

    def __init__(self, scene) -> None:
        self.figure = np.asarray(world.figure_mask(scene)) >= 128
        self.asked: list[list[str]] = []

    def background_mask(self, image, queries):
        self.asked.append(queries)
        return ~self.figure


def test_removal_replaces_the_background_with_noise_and_keeps_the_figure():
    scene = world.story_scenes(random.Random(4), 1)[0]
    image = world.render(scene)
    segmenter = _TruthSegmenter(scene)
    out = np.asarray(BackgroundRemover(segmenter, "truth")(image, ["a kid with red hair"], (0, 1)))
    before = np.asarray(image)
    figure = segmenter.figure
    assert segmenter.asked == [["a kid with red hair"]]
    assert 0.02 < figure.mean() < 0.5  # the scene has a figure and a background
    np.testing.assert_array_equal(out[figure], before[figure])
    assert (out[~figure] != before[~figure]).any(axis=-1).mean() > 0.9  # noise where the setting was
    again = np.asarray(BackgroundRemover(segmenter, "truth")(image, ["a kid with red hair"], (0, 2)))
    assert (again[~figure] != out[~figure]).any()  # each panel's seed gives its own noise


def test_queries_are_the_panels_character_descriptions_else_its_prompt(tmp_path):
    folder = _same_panels(tmp_path / "run")
    story = load_story_run(folder)
    assert story.descriptions == {"Mia": "a kid with red hair"}
    assert panel_queries(story.descriptions, ("Mia", "Leo"), "Mia and Leo") == ["a kid with red hair"]
    assert panel_queries({}, ("Mia",), "a kid on the beach") == ["a kid on the beach"]
    older = write_story_run(tmp_path / "older", [(solid(RED), "p", ["Mia"])], name="o")
    assert load_story_run(older).descriptions == {}


def test_consistory_clip_i_uses_clipseg_when_installed_and_records_it(tmp_path, tokenizer, clip_b16, monkeypatch):
    run = _same_panels(tmp_path / "runs" / "same")
    keep_all = _with_clipseg(clip_b16, tmp_path, tokenizer, 8.0)
    asked = []
    original = ClipSegSegmenter.background_mask
    monkeypatch.setattr(ClipSegSegmenter, "background_mask",
                        lambda self, image, queries: asked.append(queries) or original(self, image, queries))
    report = evaluate([run], "cs-clip-i", weights_dir=keep_all, protocol_name="consistory")
    assert report.estimates["cs-clip-i"][0].mean == pytest.approx(1.0, abs=1e-5)  # every pixel kept
    assert asked == [["a kid with red hair"]] * 3
    assert report.background == {"same": "clipseg CIDAS/clipseg-rd64-refined@unpinned, threshold 0.4"}
    assert report.as_dict()["protocol"]["background"] == report.background
    drop_all = _with_clipseg(clip_b16, tmp_path, tokenizer, -8.0)
    noisy = evaluate([run], "cs-clip-i", weights_dir=drop_all, protocol_name="consistory")
    assert noisy.estimates["cs-clip-i"][0].mean < 0.999  # all noise, seeded per panel


def test_without_clipseg_or_for_the_toy_model_the_key_runs_and_says_why(tmp_path, tokenizer, clip_b16, cli):
    run = _same_panels(tmp_path / "runs" / "same")
    report = evaluate([run], "cs-clip-i", weights_dir=clip_b16, protocol_name="consistory")
    method = report.background["same"]
    assert method.startswith("border-colour key (") and "storyd weights pull clipseg" in method
    assert report.estimates["cs-clip-i"][0].mean < 0.999  # flat panels are all background to the key
    toy = _same_panels(tmp_path / "runs" / "toy", model=protocol.TOY_MODEL)
    with_clipseg = _with_clipseg(clip_b16, tmp_path, tokenizer, 8.0)
    toy_report = evaluate([toy], "cs-clip-i", weights_dir=with_clipseg, protocol_name="consistory")
    assert toy_report.background == {"toy": "border-colour key (toy model)"}
    result = cli("eval", run, "--protocol", "consistory", "--metrics", "cs-clip-i", "--weights-dir", with_clipseg)
    assert result.exit_code == 0, result.output
    assert "protocol v2" in result.stdout and "background removed in same: clipseg" in result.stdout
    data = json.loads(cli("eval", run, "--protocol", "consistory", "--metrics", "cs-clip-i", "--weights-dir",
                          clip_b16, "--json").stdout)
    assert data["protocol"]["background"]["same"].startswith("border-colour key (")


def test_storyd_protocol_removes_backgrounds_only_when_asked(tmp_path, clip_b16, tokenizer):
    run = _same_panels(tmp_path / "runs" / "same")
    weights = _with_clipseg(clip_b16, tmp_path, tokenizer, -8.0)
    kept = evaluate([run], "clip-i", weights_dir=weights)
    assert kept.background == {} and kept.estimates["clip-i"][0].mean == pytest.approx(1.0, abs=1e-5)
    masked = evaluate([run], "clip-i", weights_dir=weights, mask_background=True)
    assert masked.background["same"].startswith("clipseg ") and masked.estimates["clip-i"][0].mean < 0.999
