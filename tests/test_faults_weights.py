"""Faults in the weights: a flipped byte, a NaN, a truncated or missing file, a file changed behind the cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from support import invoke, one_line_error

from storyd.errors import WeightsError
from storyd.plan.presets import ASSETS, PRESETS
from storyd.render.pipelines import check_finite, load_pipeline
from storyd.weights import default_lock_path, load_lock, sha256_file

UNET = "unet/diffusion_pytorch_model.safetensors"
TOY_STORY = """
title: Toy
model: toy
seed: 1
panels:
  - a red ball
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A copy of the embedded toy model that the presets use instead of the shipped one."""
    assets = tmp_path / "assets"
    shutil.copytree(ASSETS / "toy", assets / "toy")
    monkeypatch.setattr("storyd.plan.presets.ASSETS", assets)
    return assets / "toy"


def comic(story, out, *extra):
    return invoke(["comic", str(story), "-o", str(out), "-q", *extra])



def test_a_flipped_byte_in_the_toy_unet_stops_the_comic_before_drawing(toy, write_story, tmp_path, monkeypatch):
    data = bytearray((toy / UNET).read_bytes())
    data[-100] ^= 0x01
    (toy / UNET).write_bytes(bytes(data))
    monkeypatch.setattr("storyd.comic.PanelGenerator", None)  # never reached
    result = comic(write_story(TOY_STORY), tmp_path / "out")
    one_line_error(result, f"{UNET}: sha256 is", "weights.lock expects")
    assert not list((tmp_path / "out").glob("panels/*.png"))


def test_a_nan_weight_stops_the_comic_even_when_its_hash_is_pinned(toy, write_story, tmp_path, monkeypatch):
    tensors = load_file(toy / UNET)
    name = next(k for k in sorted(tensors) if tensors[k].is_floating_point())
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, toy / UNET, metadata={"format": "pt"})
    lock = json.loads(default_lock_path().read_text())  # re-pinned: the sha256 check passes
    data = (toy / UNET).read_bytes()
    for file in lock["models"]["toy"]["files"]:
        if file["path"] == UNET:
            file.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (tmp_path / "weights.lock").write_text(json.dumps(lock))
    monkeypatch.setenv("STORYD_WEIGHTS_LOCK", str(tmp_path / "weights.lock"))
    result = comic(write_story(TOY_STORY), tmp_path / "out")
    one_line_error(result, f"unet.{name} holds NaN")
    assert not list((tmp_path / "out").glob("panels/*.png"))


def test_check_finite_names_the_tensor():
    pipe = load_pipeline(PRESETS["tiny"])
    check_finite(pipe, "tiny")
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias[0] = float("inf")
    with pytest.raises(WeightsError, match="vae.decoder.conv_out.bias holds NaN or infinite"):
        check_finite(pipe, "tiny")


def test_nan_drawings_fail_in_one_line_and_nothing_is_saved(write_story, tmp_path, monkeypatch):
    import storyd.comic

    real = storyd.comic.load_pipeline

    def broken(*args, **kwargs):
        pipe = real(*args, **kwargs)
        with torch.no_grad():
            pipe.unet.conv_out.bias.fill_(float("nan"))  # after the load check: as an fp16 overflow would
        return pipe

    monkeypatch.setattr(storyd.comic, "load_pipeline", broken)
    result = comic(write_story("model: tiny\npanels:\n  - a cat\n  - a dog\n"), tmp_path / "out", "--no-csa")
    one_line_error(result, "NaN or infinite values in panel(s) 1", "nothing was saved")
    assert not list((tmp_path / "out").glob("panels/*.png"))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["panels"] == []


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_truncated_or_missing_weight_files_are_one_line_for_validate_and_comic(toy, write_story, tmp_path, damage):
    target = toy / "scheduler" / "scheduler_config.json"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.unlink()
    story = write_story(TOY_STORY)
    expected = "100 bytes, weights.lock expects" if damage == "truncate" else "file missing"
    one_line_error(invoke(["validate", str(story)]), "scheduler_config.json", expected)
    one_line_error(comic(story, tmp_path / "out"), "scheduler_config.json", expected)


def test_the_hash_cache_sees_a_file_changed_in_place_with_its_mtime_set_back(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 64)
    before = path.stat()
    assert sha256_file(path) == hashlib.sha256(b"a" * 64).hexdigest()
    path.write_bytes(b"b" * 64)  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert sha256_file(path) == hashlib.sha256(b"b" * 64).hexdigest()


def test_full_ignores_a_cache_entry_that_lies(tmp_path, storyd_home):
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    sha256_file(path)
    cache = storyd_home / "sha256-cache.json"
    entries = json.loads(cache.read_text())
    entries[str(path.resolve())]["sha256"] = "0" * 64
    cache.write_text(json.dumps(entries))
    assert sha256_file(path) == "0" * 64  # the cache is trusted while the file's stat is unchanged...
    assert sha256_file(path, full=True) == hashlib.sha256(b"weights").hexdigest()  # ...and not with full
    assert sha256_file(path) == hashlib.sha256(b"weights").hexdigest()  # and full repairs the entry


def _forge_cache(home, path):
    cache = home / "sha256-cache.json"
    entries = json.loads(cache.read_text())
    entries[str(path.resolve())]["sha256"] = "0" * 64  # a cache gone wrong, the file itself sound
    cache.write_text(json.dumps(entries))


def test_full_verify_rehashes_before_loading(toy, storyd_home):
    from storyd.render.pipelines import _load_local

    _load_local(PRESETS["toy"], storyd_home, False)  # fills the cache for the copy
    _forge_cache(storyd_home, toy / UNET)
    with pytest.raises(WeightsError, match="sha256 is 0000"):
        _load_local(PRESETS["toy"], storyd_home, False)
    _load_local(PRESETS["toy"], storyd_home, True)


def test_weights_verify_full_rehashes(storyd_home):
    def verify(*extra):
        result = invoke(["weights", "verify", "toy", "--json", *extra])
        return result.exit_code, json.loads(result.stdout)[0]["status"]

    assert verify() == (0, "present")
    _forge_cache(storyd_home, load_lock().get("toy").local_dir() / UNET)
    assert verify() == (1, "corrupt")
    assert verify("--full") == (0, "present")


def test_comic_rejects_an_unknown_verify_mode(write_story, tmp_path):
    one_line_error(comic(write_story(TOY_STORY), tmp_path / "out", "--verify", "sometimes"), "--verify 'sometimes'")


def test_loading_the_toy_model_draws_no_progress_bar(capfd):
    load_pipeline(PRESETS["toy"])
    captured = capfd.readouterr()
    assert "Loading" not in captured.err + captured.out and "it/s" not in captured.err
