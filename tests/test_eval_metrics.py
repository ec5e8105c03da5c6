"""storyd eval on tiny models built for the test: known answers, the report's shapes, the CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest
from eval_support import save_model_folder, solid, tiny_clip, tiny_vit, write_story_run
from PIL import Image

from storyd.eval import evaluate
from storyd.eval.clip_metrics import ClipEncoder, clipscore
from storyd.eval.dino import ClsEncoder
from storyd.eval.images import background_mask, mask_background, pairwise_mean
from storyd.weights import load_lock

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)
PAIRS = [(solid(RED), "a red square"), (solid(BLUE), "a blue square"), (solid(GREEN), "a green square")]


def noise_image(seed: int) -> Image.Image:
    import numpy as np

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def clip(tokenizer):
    return ClipEncoder(tiny_clip(tokenizer, PAIRS), tokenizer)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, clip, tokenizer):
    """A weights folder holding the tiny CLIP and DINO where `storyd weights` would put them."""
    root = tmp_path_factory.mktemp("weights")
    lock = load_lock()
    save_model_folder(clip.model, root / "clip-vit-b-32", lock.get("clip-vit-b-32"), tokenizer)
    save_model_folder(tiny_vit(), root / "dino-vitb16", lock.get("dino-vitb16"))
    save_model_folder(clip.model, root / "clip-vit-b-16", lock.get("clip-vit-b-16"), tokenizer)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of three one-character stories: 'same' repeats the character's look, 'mixed' does not."""
    root = tmp_path_factory.mktemp("runs")
    for k in range(3):
        colour, text = PAIRS[k][0].getpixel((0, 0)), PAIRS[k][1]
        write_story_run(root / "same" / f"s{k}", [(solid(colour), text, ["Ann"])] * 3, csa=True, name=f"s{k}")
        panels = [(noise_image(10 * k + j), text, ["Ann"]) for j in range(3)]
        write_story_run(root / "mixed" / f"s{k}", panels, csa=False, name=f"s{k}")
    return root


def test_clip_t_prefers_the_panels_own_prompt(clip):
    images = [im for im, _ in PAIRS]
    own = clip.text_image_cosines(images, [t for _, t in PAIRS])
    other = clip.text_image_cosines(images, [PAIRS[(k + 1) % 3][1] for k in range(3)])
    assert all(o > 0.99 for o in own)
    assert all(o < x - 0.5 for o, x in zip(other, own))


def test_clipscore_scale_clips_negative_cosines():
    assert clipscore(0.3) == pytest.approx(0.75)
    assert clipscore(-0.2) == 0.0


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_cls_similarity_is_one_for_identical_images_and_lower_for_unrelated(kind):
    encoder = ClsEncoder(tiny_vit(kind))
    emb = encoder.embed_images([solid(RED), solid(RED), noise_image(1)])
    assert pairwise_mean(emb, [(0, 1)]) == pytest.approx(1.0, abs=1e-5)
    assert pairwise_mean(emb, [(0, 2)]) < 0.999


def test_background_mask_keeps_the_figure_and_noise_differs_per_seed():
    image = solid((200, 220, 250), 40)
    image.paste(solid((200, 0, 0), 10), (15, 15))
    mask = background_mask(image)
    assert mask[0, 0] and not mask[20, 20]
    a, b = mask_background(image, (0, 1)), mask_background(image, (0, 2))
    assert a.getpixel((20, 20)) == (200, 0, 0)
    assert a.getpixel((0, 0)) != b.getpixel((0, 0)) or a.getpixel((1, 0)) != b.getpixel((1, 0))


def test_evaluate_scores_known_cases_and_reports_dreamsim_skipped(runs, weights):
    report = evaluate([runs / "same", runs / "mixed"], weights_dir=weights)
    assert report.metrics == ["clip-t", "clipscore", "clip-i", "dino-i"]
    for metric in ("clip-i", "dino-i"):
        same, mixed = report.estimates[metric]
        assert same.mean == pytest.approx(1.0, abs=1e-5) and same.n == 3
        assert mixed.mean < same.mean - 1e-3
    clip_same = report.estimates["clip-t"][0]
    assert clip_same.mean == pytest.approx(1.0, abs=1e-4)
    assert report.estimates["clipscore"][0].mean == pytest.approx(2.5, abs=1e-3)
    assert report.differences["clip-i"][1].mean < 0  # mixed minus same
    assert [s.metric for s in report.skipped] == ["dreamsim"]
    assert report.models["clip-i"].describe() == "openai/clip-vit-base-patch32@3d74acf9a28c"


def test_json_and_csv_shapes(cli, runs, weights):
    args = ["eval", runs / "same", runs / "mixed", "--weights-dir", weights, "--metrics", "clip-t,dino-i"]
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["protocol"]["version"] == 2 and data["protocol"]["clip_prefix"] == "A photo depicts "
    assert set(data["metrics"]) == {"clip-t", "clipscore", "dino-i"}
    assert [r["csa"] for r in data["runs"]] == ["on", "off"]
    cell = data["metrics"]["dino-i"]["runs"][1]
    assert set(cell) == {"mean", "low", "high", "n"} and cell["low"] <= cell["mean"] <= cell["high"]
    assert set(data["per_story"]["mixed"]["dino-i"]) == {"s0", "s1", "s2"}
    result = cli(*args, "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 6 and {r["run"] for r in rows} == {"same", "mixed"}
    assert rows[0]["model"] == "openai/clip-vit-base-patch32@3d74acf9a28c"


def test_table_names_protocol_model_and_runs(cli, runs, weights):
    result = cli("eval", runs / "same", runs / "mixed", "--weights-dir", weights, "--label", "csa", "--label", "plain",
                 env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "protocol v2" in result.stdout and "openai/clip-vit-base-patch32" in result.stdout
    assert "csa (tiny, CSA on, 3 st.)" in result.stdout and "plain (tiny, CSA off, 3 st.)" in result.stdout
    assert "skipped dreamsim" in result.stderr and "minus first run" in result.stdout


def test_explicit_metric_with_missing_model_is_an_error(cli, runs, tmp_path):
    result = cli("eval", runs / "same", "--metrics", "clip-i", "--weights-dir", tmp_path)
    assert result.exit_code == 2
    assert "storyd weights pull clip-vit-b-32" in result.stderr


def test_auto_skips_missing_models_but_computes_the_rest(runs, weights, tmp_path):
    partial = tmp_path / "w"
    partial.mkdir()
    (partial / "dino-vitb16").symlink_to(weights / "dino-vitb16", target_is_directory=True)
    report = evaluate([runs / "same"], weights_dir=partial)
    assert report.metrics == ["dino-i"]
    assert any("storyd weights pull clip-vit-b-32" in s.reason for s in report.skipped if s.metric == "clip-i")


def test_mask_background_replaces_flat_backdrops_before_identity_metrics(runs, weights):
    report = evaluate([runs / "same"], "clip-i", weights_dir=weights, mask_background=True)
    assert report.mask_background and report.as_dict()["protocol"]["mask_background"] is True
    assert report.estimates["clip-i"][0].mean < 0.999  # solid panels become different noise


def test_the_consistory_protocol_scores_all_pairs_on_its_own_models(cli, runs, weights, tmp_path):
    report = evaluate([runs / "same", runs / "mixed"], weights_dir=weights, protocol_name="consistory")
    assert report.metrics == ["cs-clip-t", "cs-clip-i"] and [s.metric for s in report.skipped] == ["cs-dreamsim"]
    assert report.estimates["cs-clip-t"][0].mean == pytest.approx(2.5, abs=1e-3)  # CLIPScore, prefix, ViT-B/32
    same, _ = report.estimates["cs-clip-i"]
    assert same.mean < 0.999  # backgrounds removed first (here by the key: no clipseg): flat panels become noise
    assert set(report.background) == {"same", "mixed"} and report.background["same"].startswith("border-colour key")
    assert report.models["cs-clip-i"].describe() == "openai/clip-vit-base-patch16@57c216476eef"
    # all pairs, not only those sharing a character: a story whose panels show nobody still has a CLIP-I
    write_story_run(tmp_path / "nobody" / "s0", [(solid(RED), "a red square", [])] * 2, name="s0")
    alone = evaluate([tmp_path / "nobody"], "cs-clip-i", weights_dir=weights, protocol_name="consistory")
    assert alone.estimates["cs-clip-i"][0].n == 1 and -1.0 <= alone.estimates["cs-clip-i"][0].mean <= 1.0
    result = cli("eval", runs / "same", "--protocol", "consistory", "--weights-dir", weights, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["protocol"]["name"] == "consistory" and set(data["metrics"]) == {"cs-clip-t", "cs-clip-i"}
