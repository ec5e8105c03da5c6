"""The weights lock, locating and checking weights offline, and pull/fill_lock with a mocked hub."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

from storyd import weights
from storyd.errors import InputError, WeightsError
from storyd.weights import checks

REV = "a" * 40
REV2 = "b" * 40
MODEL = b"pretend these are 7 GB of weights"
CONFIG = b'{"hidden_size": 8}'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file(path: str, data: bytes | None) -> dict:
    return {"path": path, "size": len(data) if data else None, "sha256": _sha(data) if data else None}


pytestmark = pytest.mark.usefixtures("isolated_weights")


@pytest.fixture
def lock_path(tmp_path) -> Path:
    """A small lock: one single-file model, one folder model, one unpinned model, one local model."""
    models = {
        "one": {"kind": "text-to-image", "family": "sdxl", "repo": "acme/one", "revision": REV, "license": "MIT",
                "files": [_file("model.safetensors", MODEL)], "config": "storyd/configs/sdxl"},
        "multi": {"kind": "image-encoder", "family": "clip", "repo": "acme/multi", "revision": REV, "license": "MIT",
                  "files": [_file("config.json", CONFIG), _file("sub/model.bin", MODEL)]},
        "loose": {"kind": "controlnet", "family": "sd15", "repo": "acme/loose", "revision": None, "license": "MIT",
                  "files": [_file("w.bin", None)], "note": "unpinned: nobody knows"},
        "toy": {"kind": "text-to-image", "family": "toy", "local": "assets/toy", "license": "Apache-2.0", "files": []},
    }
    path = tmp_path / "weights.lock"
    path.write_text(json.dumps({"version": 1, "models": models}, indent=2))
    return path


def _snapshot(root: Path, repo: str, rev: str, files: dict[str, bytes]) -> Path:
    """Lay files out as the Hugging Face cache does (blobs omitted: snapshots hold real files here)."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(rev)
    snap = repo_dir / "snapshots" / rev
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    return snap


# --- the lock -------------------------------------------------------------------------


def test_repo_lock_pins_presets_and_ships_their_configs():
    lock = weights.load_lock()
    sdxl = lock.get("sdxl")
    assert sdxl.pinned and sdxl.revision == "462165984030d82259a11f4367a4eed129e94a7b"
    assert sdxl.files[0].sha256 == "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"
    assert lock.get("sd15").pinned
    assert not lock.get("sd21").pinned and "unpinned" in lock.get("sd21").note
    for entry in lock.entries.values():
        assert entry.pinned or entry.note, f"{entry.name} is unpinned without saying why"
        if entry.config:
            assert (entry.config_dir() / "model_index.json").is_file()
    assert json.loads(lock.path.read_text()) == lock.to_json()  # the file is in canonical form


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "weights.lock"
    path.write_text('{\n  "version": 1,\n  "models": {,}\n}\n')
    with pytest.raises(InputError) as err:
        weights.load_lock(path)
    assert err.value.path == str(path) and err.value.line == 3
    assert str(err.value).startswith(f"{path}:3:")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"revision": "main"}, "not a 40-hex commit"),
        ({"reivsion": REV}, "did you mean 'revision'"),
        ({"files": [{"path": "x", "size": 1, "sha256": "XYZ"}]}, "not 64 lowercase hex"),
        ({"local": "x"}, "exactly one of 'repo'"),
    ],
)
def test_bad_entry_is_named(lock_path, change, expected):
    data = json.loads(lock_path.read_text())
    data["models"]["one"].update(change)
    lock_path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=expected) as err:
        weights.load_lock(lock_path)
    assert "model 'one'" in str(err.value)


def test_env_override_and_unknown_name(lock_path, monkeypatch):
    monkeypatch.setenv("STORYD_WEIGHTS_LOCK", str(lock_path))
    lock = weights.load_lock()
    assert set(lock.entries) == {"one", "multi", "loose", "toy"}
    with pytest.raises(InputError, match="did you mean 'multi'\\? known models: loose, multi, one, toy"):
        lock.get("mutli")


# --- resolve / verify / add --------------------------------------------------------------


def test_resolve_finds_the_hf_cache_snapshot_at_the_pinned_commit(lock_path, tmp_path):
    lock = weights.load_lock(lock_path)
    _snapshot(tmp_path / "hub", "acme/one", REV2, {"model.safetensors": MODEL})  # another commit: not ours
    with pytest.raises(WeightsError):
        weights.resolve(lock.get("one"))
    snap = _snapshot(tmp_path / "hub", "acme/one", REV, {"model.safetensors": MODEL})
    assert weights.resolve(lock.get("one")) == snap / "model.safetensors"
    multi = _snapshot(tmp_path / "hub", "acme/multi", REV, {"config.json": CONFIG, "sub/model.bin": MODEL})
    assert weights.resolve(lock.get("multi")) == multi


def test_hashes_are_cached_by_size_and_mtime(lock_path, tmp_path, monkeypatch):
    entry = weights.load_lock(lock_path).get("one")
    _snapshot(tmp_path / "hub", "acme/one", REV, {"model.safetensors": MODEL})
    weights.resolve(entry)

    def no_hashing(*_):
        raise AssertionError("hashed again")

    monkeypatch.setattr(checks, "file_sha256", no_hashing)  # where the hash cache hashes a file
    weights.resolve(entry)  # served from the cache
    weights.resolve(entry, verify=False)


def test_resolve_detects_a_corrupt_file(lock_path, tmp_path):
    entry = weights.load_lock(lock_path).get("one")
    snap = _snapshot(tmp_path / "hub", "acme/one", REV, {"model.safetensors": MODEL.upper()})  # same size
    with pytest.raises(WeightsError, match=f"sha256 is {_sha(MODEL.upper())}, weights.lock expects {_sha(MODEL)}"):
        weights.resolve(entry)
    assert weights.resolve(entry, verify=False) == snap / "model.safetensors"
    (snap / "model.safetensors").write_bytes(MODEL + b"!")
    with pytest.raises(WeightsError, match=f"{len(MODEL) + 1} bytes, weights.lock expects {len(MODEL)}") as err:
        weights.resolve(entry)
    assert "storyd weights pull one" in err.value.hint


def test_missing_model_names_the_pull_command(lock_path):
    lock = weights.load_lock(lock_path)
    with pytest.raises(WeightsError) as err:
        weights.resolve(lock.get("one"))
    assert err.value.message == "model 'one' is not on this machine"
    assert err.value.hint == (
        "run `storyd weights pull one` (33 B), or `storyd weights add one PATH` if you have the file"
    )
    with pytest.raises(WeightsError, match="pull loose --allow-unpinned"):
        weights.resolve(lock.get("loose"))


def test_weights_dir_order_and_plain_folder(lock_path, tmp_path, monkeypatch):
    assert weights.weights_dir() == tmp_path / "hub"
    monkeypatch.setenv("STORYD_WEIGHTS_DIR", str(tmp_path / "w"))
    assert weights.weights_dir() == tmp_path / "w"
    assert weights.weights_dir(tmp_path / "x") == tmp_path / "x"
    (tmp_path / "w" / "one").mkdir(parents=True)
    (tmp_path / "w" / "one" / "model.safetensors").write_bytes(MODEL)
    assert weights.resolve(weights.load_lock(lock_path).get("one")) == tmp_path / "w" / "one" / "model.safetensors"


def test_add_registers_without_copying_and_rejects_a_wrong_hash(lock_path, tmp_path):
    entry = weights.load_lock(lock_path).get("one")
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(MODEL.upper())
    with pytest.raises(WeightsError, match="sha256 is"):
        weights.add(entry, wrong)
    assert weights.verify([entry])[0].status == "missing"  # nothing registered
    mine = tmp_path / "downloads" / "sd_xl.safetensors"
    mine.parent.mkdir()
    mine.write_bytes(MODEL)
    assert weights.add(entry, mine) == mine
    assert weights.resolve(entry) == mine
    assert not (tmp_path / "hub").exists()  # nothing copied into the weights dir
    with pytest.raises(WeightsError, match="is a folder"):
        weights.add(entry, mine.parent)
    mine.unlink()
    with pytest.raises(WeightsError, match="the path added for it, .* is gone"):
        weights.resolve(entry)


def test_verify_reports_each_status(lock_path, tmp_path):
    lock = weights.load_lock(lock_path)
    _snapshot(tmp_path / "hub", "acme/one", REV, {"model.safetensors": MODEL})
    _snapshot(tmp_path / "hub", "acme/multi", REV, {"config.json": b"{}", "sub/model.bin": MODEL})
    _snapshot(tmp_path / "hub", "acme/loose", REV, {"w.bin": b"anything"})  # found through refs/main
    results = {r.name: r for r in weights.verify(lock.entries.values())}
    assert {n: r.status for n, r in results.items()} == {
        "one": "present", "multi": "corrupt", "loose": "unpinned", "toy": "missing"}
    assert "config.json" in results["multi"].message


# --- pull and fill_lock with a mocked hub ---------------------------------------------------


def _fake_download(tmp_path, served: dict[str, bytes], calls: list):
    def download(repo, filename, *, revision, cache_dir, tqdm_class=None, **_):
        calls.append((repo, filename, revision, Path(cache_dir)))
        if tqdm_class is not None:
            bar = tqdm_class(total=len(served[filename]))
            bar.update(len(served[filename]))
        snap = _snapshot(Path(cache_dir), repo, revision or REV2, {filename: served[filename]})
        return str(snap / filename)

    return download


def test_pull_downloads_at_the_commit_and_verifies(lock_path, tmp_path, monkeypatch, recorder):
    lock = weights.load_lock(lock_path)
    calls = []
    served = {"config.json": CONFIG, "sub/model.bin": MODEL}
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_download(tmp_path, served, calls))
    path = weights.pull(lock.get("multi"), progress=recorder)
    assert path == tmp_path / "hub" / "models--acme--multi" / "snapshots" / REV
    assert calls == [("acme/multi", f, REV, tmp_path / "hub") for f in ("config.json", "sub/model.bin")]
    assert ("download sub/model.bin", len(MODEL), len(MODEL), "bytes", "") in recorder.updates
    assert weights.resolve(lock.get("multi")) == path

    served["sub/model.bin"] = MODEL.upper()
    (path / "sub" / "model.bin").unlink()
    with pytest.raises(WeightsError, match="sub/model.bin: sha256 is"):
        weights.pull(lock.get("multi"))


def test_pull_refuses_unpinned_and_local(lock_path, tmp_path, monkeypatch):
    lock = weights.load_lock(lock_path)
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_download(tmp_path, {"w.bin": b"w"}, calls))
    with pytest.raises(WeightsError, match="'loose' is unpinned") as err:
        weights.pull(lock.get("loose"))
    assert "--allow-unpinned" in err.value.hint and calls == []
    path = weights.pull(lock.get("loose"), allow_unpinned=True)
    assert path.read_bytes() == b"w" and calls[0][2] is None
    with pytest.raises(WeightsError, match="ships with storyd"):
        weights.pull(lock.get("toy"))


class _FakeApi:
    def __init__(self, commit: str, siblings: list[RepoSibling]):
        self.commit, self.siblings, self.asked = commit, siblings, []

    def model_info(self, repo, *, revision, files_metadata):
        self.asked.append((repo, revision, files_metadata))
        return SimpleNamespace(sha=self.commit, siblings=self.siblings)


def test_fill_lock_writes_commit_sizes_and_hashes(lock_path, tmp_path, monkeypatch):
    big = b"large file stored in LFS"
    api = _FakeApi(REV2, [
        RepoSibling("w.bin", size=len(big), lfs=BlobLfsInfo(size=len(big), sha256=_sha(big), pointer_size=130)),
        RepoSibling("README.md", size=10),
    ])
    entry = weights.fill_lock("loose", lock_path, revision="main", api=api)
    assert api.asked == [("acme/loose", "main", True)]
    assert entry.pinned and entry.revision == REV2
    assert entry.files == (weights.LockedFile("w.bin", len(big), _sha(big)),)
    reread = weights.load_lock(lock_path)
    assert reread.get("loose") == entry and reread.get("one") == weights.load_lock(lock_path).get("one")

    # a small git file has no LFS sha256: it is downloaded and hashed
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_download(tmp_path, {"config.json": CONFIG}, calls))
    lfs = BlobLfsInfo(size=1, sha256="0" * 64, pointer_size=1)
    api = _FakeApi(REV, [RepoSibling("config.json", size=len(CONFIG)), RepoSibling("sub/model.bin", size=1, lfs=lfs)])
    with pytest.raises(WeightsError, match="sub/model.bin at aaaaaaaaaaaa has sha256 0{64} on the hub"):
        weights.fill_lock("multi", lock_path, api=api)  # same commit, different hash: a person must look
    assert calls[0][2] == REV

    with pytest.raises(WeightsError, match="has no file 'model.safetensors'; did you mean 'model.safetensor'"):
        weights.fill_lock("one", lock_path, api=_FakeApi(REV, [RepoSibling("model.safetensor", size=1)]))


def test_fill_lock_hashes_a_local_model(lock_path, tmp_path, monkeypatch):
    monkeypatch.setattr("storyd.weights.lock.repo_root", lambda: tmp_path)
    with pytest.raises(WeightsError, match="assets/toy does not exist"):
        weights.fill_lock("toy", lock_path)
    toy = tmp_path / "assets" / "toy"
    (toy / "unet").mkdir(parents=True)
    (toy / "unet" / "w.safetensors").write_bytes(MODEL)
    (toy / "model_index.json").write_bytes(CONFIG)
    entry = weights.fill_lock("toy", lock_path)
    assert [f.path for f in entry.files] == ["model_index.json", "unet/w.safetensors"]
    assert entry.pinned and entry.files[1].sha256 == _sha(MODEL)
    lock = weights.load_lock(lock_path)
    assert weights.resolve(lock.get("toy")) == toy
    (toy / "unet" / "w.safetensors").write_bytes(MODEL.upper())
    with pytest.raises(WeightsError, match="w.safetensors: sha256 is") as err:
        weights.resolve(lock.get("toy"))
    assert "git checkout assets/toy" in err.value.hint


# --- shipped diffusers configs -----------------------------------------------------------

# Published parameter counts of each preset's components.
PARAMS = {
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd21": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
}


@pytest.mark.parametrize("preset", sorted(PARAMS))
def test_configs_build_the_real_architectures(preset):
    """Each config, instantiated without memory on the meta device, has the published parameter count."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = weights.load_lock().get(preset).config_dir()
    index = json.loads((folder / "model_index.json").read_text())
    counts = {}
    with torch.device("meta"):
        counts["unet"] = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        counts["vae"] = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        for name in ("text_encoder", "text_encoder_2"):
            if name in index:
                cls = getattr(transformers, index[name][1])
                counts[name] = cls(transformers.CLIPTextConfig.from_json_file(folder / name / "config.json"))
    assert {k: sum(p.numel() for p in m.parameters()) for k, m in counts.items()} == PARAMS[preset]


def test_prepare_config_dir_writes_tokenizers_and_loads_offline(tmp_path):
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTokenizer

    entry = weights.load_lock().get("sdxl")
    folder = weights.prepare_config_dir(entry, tmp_path / "cache")
    assert folder == tmp_path / "cache" / "configs" / "sdxl"
    index = json.loads((folder / "model_index.json").read_text())
    assert {k for k, v in index.items() if isinstance(v, list) and v[0]} <= {p.name for p in folder.iterdir()}
    tok2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True)
    tok1 = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    assert (tok1.pad_token, tok2.pad_token, tok2.pad_token_id) == ("<|endoftext|>", "!", 0)
    assert tok1("a lighthouse").input_ids == tok2("a lighthouse").input_ids
    scheduler = EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    assert scheduler.config.prediction_type == "epsilon"
    assert weights.prepare_config_dir(entry, tmp_path / "cache") == folder  # idempotent
    with pytest.raises(WeightsError, match="no config folder"):
        weights.prepare_config_dir(weights.load_lock().get("clip-vit-h-14"), tmp_path)


def test_hub_failures_become_weights_errors(lock_path):
    class Offline:
        def model_info(self, *_, **__):
            raise ConnectionError("Name or service not known")

    with pytest.raises(WeightsError, match="could not read acme/one from the hub") as err:
        weights.fill_lock("one", lock_path, api=Offline())
    assert "network" in err.value.hint
