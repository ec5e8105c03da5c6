"""DreamSim: the release converter, the distance, and `storyd eval` with a converted tiny release."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch
from dreamsim_support import IMAGE, RELEASE, build_release, reference_embeddings
from eval_support import solid, write_story_run
from PIL import Image

from storyd import weights
from storyd.errors import WeightsError
from storyd.eval import evaluate, protocol
from storyd.eval.dreamsim import DreamSimEncoder, resize_to_tensor
from storyd.eval.dreamsim_convert import convert_release


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STORYD_WEIGHTS_DIR", raising=False)


def _unzip(archive, dest):
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    return dest


def _images(seed: int, n: int = 3):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (24 + 8 * k, 40, 3), dtype=np.uint8)) for k in range(n)]


@pytest.mark.parametrize("adapter_format", ["bin", "safetensors"])
def test_converted_vit_matches_dino_with_the_unmerged_lora(tmp_path, adapter_format):
    archive, reference = build_release(tmp_path, adapter_format=adapter_format)
    out = tmp_path / "vit"
    convert_release(_unzip(archive, tmp_path / "unpacked"), out)
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "conversion.json"}
    record = json.loads((out / "conversion.json").read_text())
    assert record["backbone"] == "teacher" and record["lora"]["scaling"] == pytest.approx(6 / 4)
    assert len(record["lora"]["layers"]) == 4  # qkv and fc2 of two blocks
    encoder = DreamSimEncoder.load(out)
    images = _images(1)
    pixels = resize_to_tensor(images, IMAGE)
    expected = reference_embeddings(reference, pixels)
    torch.testing.assert_close(encoder.embed_images(images), expected, atol=2e-5, rtol=1e-4)
    with reference.disable_adapter():  # the LoRA matters: without it the embeddings differ
        assert (reference_embeddings(reference, pixels) - expected).abs().max() > 1e-3


def test_preprocessing_squeezes_the_whole_image_with_imagenet_statistics():
    image = Image.fromarray(np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3))
    pixels = resize_to_tensor([image], 16)
    by_hand = np.asarray(image.resize((16, 16), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    mean, std = np.array(protocol.IMAGENET_MEAN), np.array(protocol.IMAGENET_STD)
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), (by_hand - mean) / std, atol=1e-5)


def test_converter_names_what_is_missing(tmp_path):
    archive, _ = build_release(tmp_path)
    source = _unzip(archive, tmp_path / "unpacked")
    (source / "dino_vitb16_single_lora" / "adapter_model.bin").unlink()
    with pytest.raises(WeightsError, match="has neither adapter_model.safetensors nor adapter_model.bin"):
        convert_release(source, tmp_path / "out")
    (source / "dino_vitb16_pretrain.pth").unlink()
    with pytest.raises(WeightsError, match="expected one dino_vitb16_pretrain.pth in the unpacked archive, found none"):
        convert_release(source, tmp_path / "out")


def _dreamsim_lock(tmp_path, archive, monkeypatch):
    """The repository's lock with its dreamsim entry pointed at the tiny release and pinned to it."""
    repo = weights.load_lock().get("dreamsim")
    data = archive.read_bytes()
    entry = {**repo.to_json(), "url": archive.as_uri(),
             "files": [{"path": RELEASE, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}
    path = tmp_path / "weights.lock"
    path.write_text(json.dumps({"version": 1, "models": {"dreamsim": entry}}))
    monkeypatch.setenv("STORYD_WEIGHTS_LOCK", str(path))
    return weights.load_lock(path)


def test_storyd_eval_computes_dreamsim_after_a_pull(cli, tmp_path, monkeypatch):
    archive, _ = build_release(tmp_path / "release")
    lock = _dreamsim_lock(tmp_path, archive, monkeypatch)
    wdir = tmp_path / "weights"
    folder = weights.pull(lock.get("dreamsim"), wdir)
    assert folder == wdir / "dreamsim" and (folder / "model.safetensors").is_file()
    assert weights.resolve(lock.get("dreamsim"), wdir) == folder
    runs = tmp_path / "runs"
    for k in range(2):
        write_story_run(runs / "same" / f"s{k}", [(solid((40 * k, 90, 200)), "a kid", ["Ann"])] * 3, name=f"s{k}")
        write_story_run(runs / "mixed" / f"s{k}", [(im, "a kid", ["Ann"]) for im in _images(10 + k)], name=f"s{k}")
    report = evaluate([runs / "same", runs / "mixed"], "dreamsim", weights_dir=wdir)
    same, mixed = report.estimates["dreamsim"]
    assert same.mean == pytest.approx(0.0, abs=1e-5) and mixed.mean > 1e-3
    sha = lock.get("dreamsim").files[0].sha256
    assert report.models["dreamsim"].describe() == f"{RELEASE}@{sha[:12]}"
    result = cli("eval", runs / "same", runs / "mixed", "--metrics", "dreamsim", "--weights-dir", wdir, "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["metrics"]["dreamsim"]
    assert row["runs"][0]["mean"] == pytest.approx(0.0, abs=1e-5) and row["runs"][1]["mean"] > 1e-3


def test_the_repository_lock_names_the_release_unpinned_with_a_lock_fill_note():
    entry = weights.load_lock().get("dreamsim")
    assert entry.url.endswith("/v0.2.0-checkpoints/" + RELEASE) and entry.archive == "zip"
    assert entry.convert == "dreamsim" and entry.license == "MIT" and entry.repo is None
    assert [f.path for f in entry.files] == [RELEASE] and not entry.pinned
    assert "storyd weights lock-fill dreamsim" in entry.note
