"""weights.lock ``url`` entries: an archive downloaded (here from file:// URLs), checked, unpacked safely."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from storyd import weights
from storyd.errors import InputError, WeightsError
from storyd.weights import download, installed

FILES = {"config.json": b'{"hidden_size": 8}', "sub/model.bin": b"pretend weights"}


def _zip(path: Path, members: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _entry(archive: Path, *, pinned: bool = True, sha: str | None = None, **extra) -> dict:
    data = archive.read_bytes()
    return {"kind": "image-encoder", "family": "dino", "license": "MIT", "url": archive.as_uri(), "archive": "zip",
            "files": [{"path": "release.zip", "size": len(data) if pinned else None,
                       "sha256": (sha or hashlib.sha256(data).hexdigest()) if pinned else None}],
            "note": None if pinned else "unpinned: run `storyd weights lock-fill m`", **extra}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STORYD_WEIGHTS_DIR", str(tmp_path / "w"))


@pytest.fixture
def archive(tmp_path) -> Path:
    return _zip(tmp_path / "release.zip", FILES)


def _lock(tmp_path, monkeypatch, **entries) -> weights.WeightsLock:
    path = tmp_path / "weights.lock"
    path.write_text(json.dumps({"version": 1, "models": entries}))
    monkeypatch.setenv("STORYD_WEIGHTS_LOCK", str(path))
    return weights.load_lock(path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"archive": "tar"}, "archive 'tar' is not one of zip"),
        ({"revision": "a" * 40}, "has no revision"),
        ({"url": "ftp://x/release.zip"}, "must start with https://"),
        ({"convert": "nope"}, "convert 'nope' is not one of dreamsim"),
        ({"repo": "acme/m"}, "exactly one of 'repo'"),
        ({"files": []}, "lists exactly one file"),
        ({"files": [{"path": "a/release.zip", "size": None, "sha256": None}]}, "lists exactly one file"),
    ],
)
def test_bad_url_entries_are_named(tmp_path, monkeypatch, archive, change, expected):
    with pytest.raises(InputError, match=expected):
        _lock(tmp_path, monkeypatch, m={**_entry(archive), **change})


def test_url_entry_round_trips_and_hub_entries_keep_their_shape(tmp_path, monkeypatch, archive):
    hub = {"kind": "clip", "family": "clip", "license": "MIT", "repo": "acme/h", "revision": None, "files": [],
           "note": "unpinned", "config": None, "local": None}
    lock = _lock(tmp_path, monkeypatch, m=_entry(archive), h=hub)
    assert lock.get("m").pinned and not lock.get("m").single_file
    assert set(lock.get("h").to_json()) == set(hub)  # no url/archive/convert keys on a hub entry
    weights.write_lock(lock)
    assert weights.load_lock(lock.path) == lock
    with pytest.raises(InputError, match="'archive' and 'convert' belong to a 'url' entry"):
        _lock(tmp_path, monkeypatch, h={**hub, "archive": "zip"})


def test_pull_downloads_checks_unpacks_and_verify_follows_the_stamp(tmp_path, monkeypatch, archive, recorder):
    entry = _lock(tmp_path, monkeypatch, m=_entry(archive)).get("m")
    folder = weights.pull(entry, progress=recorder)
    assert folder == tmp_path / "w" / "m"
    assert (folder / "sub" / "model.bin").read_bytes() == FILES["sub/model.bin"]
    assert ("download release.zip", archive.stat().st_size, archive.stat().st_size, "bytes", "") in recorder.updates
    assert weights.resolve(entry) == folder and weights.verify([entry])[0].status == "present"
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["m"]  # no temporary files left

    def no_download(*_a, **_k):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(download, "download_url", no_download)
    assert weights.pull(entry) == folder  # installed and intact: kept

    (folder / "sub" / "model.bin").write_bytes(b"PRETEND WEIGHTS")  # same size, other bytes
    result = weights.verify([entry])[0]
    assert result.status == "corrupt" and "sha256 differs" in result.message
    assert "storyd weights pull m" in result.hint

    repinned = replace(entry, files=(weights.LockedFile("release.zip", 1, "0" * 64),))
    with pytest.raises(WeightsError, match="installed from an archive with sha256 .*, weights.lock pins 0{64}"):
        weights.resolve(repinned)


def test_pull_refuses_a_wrong_hash_with_one_line(cli, tmp_path, monkeypatch, archive):
    _lock(tmp_path, monkeypatch, m=_entry(archive, sha="0" * 64))
    result = cli("weights", "pull", "m")
    assert result.exit_code == 2
    actual = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert result.stderr.strip() == (
        f"Error: model 'm': {archive.as_uri()}: sha256 is {actual}, weights.lock expects {'0' * 64}; run the "
        "command again; if it persists the file at the url changed, and a maintainer must check it and re-pin "
        "with `storyd weights lock-fill m`"
    )
    assert not (tmp_path / "w" / "m").exists() and list((tmp_path / "w").iterdir()) == []


@pytest.mark.parametrize(
    ("members", "links", "expected"),
    [
        ({"ok.txt": b"x", "../evil.txt": b"x"}, (), "member '../evil.txt' climbs out of the folder"),
        ({"a/../../evil.txt": b"x"}, (), "climbs out of the folder"),
        ({"/abs.txt": b"x"}, (), "is an absolute path"),
        ({"ok.txt": b"x"}, ("link",), "member 'link' is a symbolic link"),
    ],
)
def test_pull_refuses_an_archive_that_would_write_outside_its_folder(tmp_path, monkeypatch, members, links,
                                                                     expected):
    bad = _zip(tmp_path / "release.zip", members, links)
    entry = _lock(tmp_path, monkeypatch, m=_entry(bad)).get("m")
    with pytest.raises(WeightsError, match=expected):
        weights.pull(entry)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "w" / "evil.txt").exists()
    assert list((tmp_path / "w").iterdir()) == []


def test_a_file_that_is_not_a_zip_is_a_weights_error(tmp_path, monkeypatch):
    bad = tmp_path / "release.zip"
    bad.write_bytes(b"<html>not found</html>")
    entry = _lock(tmp_path, monkeypatch, m=_entry(bad)).get("m")
    with pytest.raises(WeightsError, match="release.zip is not a readable zip archive"):
        weights.pull(entry)


def test_unpinned_needs_the_flag_and_lock_fill_pins_it(tmp_path, monkeypatch, archive):
    lock = _lock(tmp_path, monkeypatch, m=_entry(archive, pinned=False))
    with pytest.raises(WeightsError, match="'m' is unpinned") as err:
        weights.pull(lock.get("m"))
    assert "--allow-unpinned" in err.value.hint
    missing = weights.verify([lock.get("m")])[0]
    assert "storyd weights pull m --allow-unpinned" in missing.hint and "if you have release.zip" in missing.hint
    assert weights.pull(lock.get("m"), allow_unpinned=True).is_dir()
    assert weights.verify([lock.get("m")])[0].status == "unpinned"

    filled = weights.fill_lock("m", lock.path)
    data = archive.read_bytes()
    assert filled.pinned and filled.files == (weights.LockedFile("release.zip", len(data),
                                                                 hashlib.sha256(data).hexdigest()),)
    assert "lock-fill m" in filled.note and weights.load_lock(lock.path).get("m") == filled
    assert weights.verify([filled])[0].status == "present"  # the unpinned pull was of the same archive
    _zip(archive, {**FILES, "extra.txt": b"changed upstream"})
    with pytest.raises(WeightsError, match="now has sha256 .*, weights.lock says"):
        weights.fill_lock("m", lock.path)


def test_add_installs_an_archive_you_already_have(tmp_path, monkeypatch, archive):
    entry = _lock(tmp_path, monkeypatch, m=_entry(archive, url="https://example.invalid/release.zip")).get("m")
    other = _zip(tmp_path / "other.zip", {"x": b"y"})
    with pytest.raises(WeightsError, match="other.zip: .*weights.lock expects"):
        weights.add(entry, other)
    with pytest.raises(WeightsError, match="is installed from one archive"):
        weights.add(entry, tmp_path)
    assert weights.add(entry, archive) == tmp_path / "w" / "m"
    assert weights.verify([entry])[0].status == "present"


def test_download_errors_are_one_line_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="could not download file:///nowhere/x.zip: ") as err:
        download.download_url("file:///nowhere/x.zip", tmp_path / "x.zip")
    assert "check the network connection" in err.value.hint and not (tmp_path / "x.zip").exists()


def test_truncated_download_is_refused(tmp_path, monkeypatch):
    class Short(io.BytesIO):
        headers = {"Content-Length": "100"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: Short(b"only ten b"))
    with pytest.raises(WeightsError, match="stopped at 10 of 100 bytes"):
        download.download_url("https://example.invalid/x.zip", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_installed_stamp_names_archive_converter_and_files(tmp_path, monkeypatch, archive):
    entry = _lock(tmp_path, monkeypatch, m=_entry(archive)).get("m")
    stamp = json.loads((weights.pull(entry) / installed.STAMP).read_text())
    assert stamp["archive"]["sha256"] == entry.files[0].sha256 and stamp["converter"] is None
    assert [f["path"] for f in stamp["files"]] == ["config.json", "sub/model.bin"]
