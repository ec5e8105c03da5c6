"""weights.lock: which weights storyd uses, pinned by commit, size and sha256.

The lock is JSON with sorted keys: ``{"version": 1, "models": {name: entry}}``.
An entry names a Hugging Face repository at an exact commit and the files storyd
needs from it, (``local``) a folder shipped in this repository, or (``url``) a
direct download: one archive file, checked by its size and sha256, unpacked and
(``convert``) converted into a folder storyd can load. Unknown values are
``null``; such an entry is *unpinned* and says why in its ``note``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from storyd.errors import InputError
from storyd.fsutil import atomic_write_text
from storyd.weights.converters import CONVERTERS

LOCK_VERSION = 1
KINDS = ("text-to-image", "image-encoder", "clip", "motion-adapter", "controlnet", "ip-adapter", "lora", "annotator",
         "video", "segmenter")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
ARCHIVES = ("zip",)
URL_SCHEMES = ("https://", "http://", "file://")
_OPTIONAL_KEYS = ("url", "archive", "convert")  # left out of the JSON when null: hub and local entries keep their shape
_ENTRY_KEYS = ("kind", "family", "repo", "revision", "files", "license", "config", "note", "local", *_OPTIONAL_KEYS)
_FILE_KEYS = ("path", "size", "sha256")


def repo_root() -> Path:
    """The folder that holds the ``storyd`` package; lock paths such as ``config`` are relative to it."""
    return Path(__file__).resolve().parents[2]  # storyd/weights/lock.py -> the repository


def default_lock_path() -> Path:
    """``$STORYD_WEIGHTS_LOCK``, else the repository's ``weights.lock``."""
    env = os.environ.get("STORYD_WEIGHTS_LOCK")
    return Path(env) if env else repo_root() / "weights.lock"


@dataclass(frozen=True)
class LockedFile:
    path: str  # relative to the repository (or the local folder), with forward slashes
    size: int | None  # bytes; None: not known yet
    sha256: str | None  # lowercase hex; None: not known yet


@dataclass(frozen=True)
class LockEntry:
    name: str
    kind: str
    family: str
    repo: str | None  # Hugging Face repository id; None for a local entry
    revision: str | None  # 40-hex commit; None: unpinned
    files: tuple[LockedFile, ...]
    license: str
    config: str | None = None  # shipped diffusers config folder, for single-file checkpoints
    note: str | None = None
    local: str | None = None  # folder in this repository that holds the files
    url: str | None = None  # direct download of the one file in ``files`` (an archive)
    archive: str | None = None  # the downloaded file's format, one of ARCHIVES
    convert: str | None = None  # converter that turns the unpacked archive into the model folder

    @property
    def pinned(self) -> bool:
        """True when every file has a sha256 and (for hub entries) the revision is a commit."""
        hashes_known = bool(self.files) and all(f.sha256 for f in self.files)
        return hashes_known and (self.local is not None or self.url is not None or self.revision is not None)

    @property
    def size(self) -> int | None:
        """Total bytes, or None if any file's size is unknown."""
        sizes = [f.size for f in self.files]
        return None if not sizes or None in sizes else sum(sizes)  # type: ignore[arg-type]

    @property
    def single_file(self) -> bool:
        return len(self.files) == 1 and self.local is None and self.url is None

    def config_dir(self) -> Path | None:
        return repo_root() / self.config if self.config else None

    def local_dir(self) -> Path | None:
        return repo_root() / self.local if self.local else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["name"]
        data["files"] = [asdict(f) for f in self.files]
        for key in _OPTIONAL_KEYS:
            if data[key] is None:
                del data[key]
        return data


@dataclass(frozen=True)
class WeightsLock:
    path: Path
    entries: dict[str, LockEntry]

    def get(self, name: str) -> LockEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise InputError(
                f"no model named '{name}' in {self.path.name}",
                did_you_mean(name, self.entries) + f"known models: {', '.join(sorted(self.entries))}",
            ) from None

    def replace(self, entry: LockEntry) -> WeightsLock:
        return WeightsLock(self.path, {**self.entries, entry.name: entry})

    def to_json(self) -> dict[str, Any]:
        return {"version": LOCK_VERSION, "models": {n: e.to_json() for n, e in sorted(self.entries.items())}}


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def load_lock(path: Path | None = None) -> WeightsLock:
    """Read and check a lock file; every problem is an InputError naming the file."""
    path = Path(path) if path is not None else default_lock_path()
    fix = "fix the file, or restore it with `git checkout weights.lock`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("weights lock not found", "set STORYD_WEIGHTS_LOCK to its path", path=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", fix, path=path, line=exc.lineno, col=exc.colno) from None
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION or not isinstance(data.get("models"), dict):
        raise InputError(f"expected {{\"version\": {LOCK_VERSION}, \"models\": {{...}}}}", fix, path=path)
    entries = {name: _parse_entry(name, raw, path) for name, raw in data["models"].items()}
    return WeightsLock(path, entries)


def write_lock(lock: WeightsLock) -> None:
    atomic_write_text(lock.path, json.dumps(lock.to_json(), indent=2, sort_keys=True) + "\n")


def _parse_entry(name: str, raw: Any, path: Path) -> LockEntry:
    def bad(message: str) -> InputError:
        return InputError(f"model '{name}': {message}", "fix the entry in the lock file", path=path)

    if not isinstance(raw, dict):
        raise bad("expected an object")
    for key in raw:
        if key not in _ENTRY_KEYS:
            raise bad(f"unknown key '{key}'; {did_you_mean(key, _ENTRY_KEYS)}keys are {', '.join(_ENTRY_KEYS)}")
    for key in ("kind", "family", "license"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise bad(f"'{key}' must be a non-empty string")
    if raw["kind"] not in KINDS:
        raise bad(f"kind '{raw['kind']}' is not one of {', '.join(KINDS)}")
    if sum(raw.get(key) is not None for key in ("repo", "local", "url")) != 1:
        raise bad("give exactly one of 'repo' (a Hugging Face repository), 'url' (a direct download) "
                  "and 'local' (a folder in this repository)")
    revision = raw.get("revision")
    if revision is not None and not (isinstance(revision, str) and _COMMIT.fullmatch(revision)):
        raise bad(f"revision {revision!r} is not a 40-hex commit (use null if unknown)")
    if not isinstance(raw.get("files"), list):
        raise bad("'files' must be a list")
    files = tuple(_parse_file(f, bad) for f in raw["files"])
    for key in ("repo", "config", "note", "local", *_OPTIONAL_KEYS):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise bad(f"'{key}' must be a string or null")
    if raw.get("url") is not None:
        _check_download(raw, files, bad)
    elif raw.get("archive") is not None or raw.get("convert") is not None:
        raise bad("'archive' and 'convert' belong to a 'url' entry")
    return LockEntry(
        name=name,
        kind=raw["kind"],
        family=raw["family"],
        repo=raw.get("repo"),
        revision=revision,
        files=files,
        license=raw["license"],
        config=raw.get("config"),
        note=raw.get("note"),
        local=raw.get("local"),
        url=raw.get("url"),
        archive=raw.get("archive"),
        convert=raw.get("convert"),
    )


def _check_download(raw: dict, files: tuple[LockedFile, ...], bad) -> None:
    """A 'url' entry downloads one archive, named by its only file, and unpacks it."""
    if not raw["url"].startswith(URL_SCHEMES):
        raise bad(f"url {raw['url']!r} must start with {', '.join(URL_SCHEMES)}")
    if raw.get("revision") is not None:
        raise bad("a 'url' entry has no revision: its file's sha256 pins it")
    if raw.get("archive") not in ARCHIVES:
        raise bad(f"archive {raw.get('archive')!r} is not one of {', '.join(ARCHIVES)}")
    if raw.get("convert") is not None and raw["convert"] not in CONVERTERS:
        raise bad(f"convert {raw['convert']!r} is not one of {', '.join(sorted(CONVERTERS))}")
    if len(files) != 1 or any(c in files[0].path for c in "/\\") or files[0].path in ("", ".", ".."):
        raise bad("a 'url' entry lists exactly one file: the downloaded archive's name, without folders")


def _parse_file(raw: Any, bad) -> LockedFile:
    if not isinstance(raw, dict) or set(raw) - set(_FILE_KEYS) or not isinstance(raw.get("path"), str):
        raise bad(f"each file must be {{\"path\": str, \"size\": int|null, \"sha256\": hex|null}}, got {raw!r}")
    size, sha = raw.get("size"), raw.get("sha256")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise bad(f"file '{raw['path']}': size {size!r} is not a byte count")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise bad(f"file '{raw['path']}': sha256 {sha!r} is not 64 lowercase hex digits")
    return LockedFile(raw["path"], size, sha)
