"""`storyd weights ...` through the Typer app; the hub is never called."""

from __future__ import annotations

import hashlib
import json

import pytest

from storyd.cli.weights import weights_app

REV = "c" * 40
DATA = b"weights for the CLI"


@pytest.fixture(autouse=True)
def _isolated(isolated_weights, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def small_lock(tmp_path, monkeypatch):
    entry = {"kind": "text-to-image", "family": "sd15", "repo": "acme/m", "revision": REV, "license": "MIT",
             "files": [{"path": "m.safetensors", "size": len(DATA), "sha256": hashlib.sha256(DATA).hexdigest()}]}
    path = tmp_path / "weights.lock"
    path.write_text(json.dumps({"version": 1, "models": {"m": entry}}))
    monkeypatch.setenv("STORYD_WEIGHTS_LOCK", str(path))
    return path


def test_list_json_covers_the_repository_lock(cli):
    result = cli("weights", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["sdxl"]["pinned"] is True and rows["sdxl"]["size"] == 6938078334
    assert rows["sd21"]["pinned"] is False and rows["sd21"]["status"] == "missing"
    assert {"sd15", "sd15-diffusers", "clip-vit-h-14", "ip-adapter-sd15", "toy"} <= set(rows)


def test_list_shows_every_evaluation_and_annotator_model_with_its_commit(cli):
    from storyd.eval import protocol
    from storyd.render.control import ANNOTATOR_WEIGHTS

    rows = {row["name"]: row for row in json.loads(cli("weights", "list", "--json").stdout)}
    wanted = {m.model for m in protocol.METRICS.values() if m.model != "toy-reader"}
    wanted |= {protocol.BACKGROUND_MODEL, *(name for names in ANNOTATOR_WEIGHTS.values() for name in names)}
    assert wanted <= set(rows)
    # commits from ../shared/research/weights-pins.md; "?" where it has none, "-" for a release archive (by url)
    commits = {"clip-vit-b-32": "3d74acf9a28c", "clip-vit-b-16": "57c216476eef", "annotator-depth": "11eaf7a1cf4b"}
    for name in wanted:
        row = rows[name]
        assert row["commit"] == commits.get(name, "-" if row["repo"].startswith("https://") else "?"), name
        assert not row["pinned"] and ("unverified" in row["note"] or "unpinned" in row["note"]), name
    assert rows["clipseg"]["repo"] == "CIDAS/clipseg-rd64-refined" and rows["clipseg"]["kind"] == "segmenter"


def test_list_table_shows_unpinned(cli):
    result = cli("weights", "list")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("sd21 "))
    assert "unpinned" in line and "missing" in line


def test_unknown_model_exits_2_with_a_suggestion(cli):
    result = cli("weights", "pull", "sdxk")
    assert result.exit_code == 2
    assert "Error: no model named 'sdxk' in weights.lock; did you mean 'sdxl'?" in result.stderr


def test_pull_refuses_unpinned(cli):
    result = cli("weights", "pull", "sd21")
    assert result.exit_code == 2
    assert "is unpinned" in result.stderr and "--allow-unpinned" in result.stderr


def test_add_then_verify(cli, small_lock, tmp_path):
    good = tmp_path / "m.safetensors"
    good.write_bytes(DATA)
    result = cli("weights", "add", "m", good, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"name": "m", "path": str(good)}
    result = cli("weights", "verify", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["status"] == "present"

    good.write_bytes(DATA.upper())  # damaged after registering
    result = cli("weights", "verify", "m", "--json")
    assert result.exit_code == 1
    row = json.loads(result.stdout)[0]
    assert row["status"] == "corrupt" and "sha256 is" in row["message"]


def test_add_rejects_a_wrong_file(cli, small_lock, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"x" * len(DATA))
    result = cli("weights", "add", "m", bad)
    assert result.exit_code == 2
    assert "sha256 is" in result.stderr and "weights.lock expects" in result.stderr


def test_lock_fill_with_a_mocked_hub(cli, small_lock, monkeypatch):
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

    new = b"newer weights"
    sibling = RepoSibling("m.safetensors", size=len(new),
                          lfs=BlobLfsInfo(size=len(new), sha256=hashlib.sha256(new).hexdigest(), pointer_size=1))

    class Api:
        def model_info(self, repo, *, revision, files_metadata):
            assert (repo, revision, files_metadata) == ("acme/m", "v2", True)
            return SimpleNamespace(sha="d" * 40, siblings=[sibling])

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    result = cli("weights", "lock-fill", "m", "--revision", "v2", "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(small_lock.read_text())["models"]["m"]
    assert written["revision"] == "d" * 40 and written["files"][0]["size"] == len(new)


def test_every_command_has_help(cli):
    for command in weights_app.registered_commands:
        assert command.callback.__doc__, command.name
        result = cli("weights", command.name or command.callback.__name__, "--help")
        assert result.exit_code == 0, result.output
