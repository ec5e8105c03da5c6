"""Where locked weights live on this machine, and whether they are the files the lock names.

Nothing here touches the network. A model is looked for, in order, at the path the
user registered (``storyd weights add``), in the Hugging Face cache at the locked
commit, and in ``<weights dir>/<name>/``; a ``url`` entry only in the last, where
its archive was unpacked and converted (checked through its stamp: installed.py).
sha256 results are cached under the storyd home, so a 7 GB checkpoint is hashed once;
an entry holds only while the file's size, mtime, inode and ctime are unchanged (a user
can set the mtime back after editing a file in place, not the ctime), and ``full``
checks ignore the cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from storyd.errors import WeightsError
from storyd.fsutil import atomic_write_text
from storyd.progress import Progress
from storyd.weights import paths
from storyd.weights.checks import VerifyResult, missing_hint, read_json, sha256_file
from storyd.weights.installed import add_archive, verify_installed
from storyd.weights.lock import LockedFile, LockEntry


def _registry_file() -> Path:
    return paths.storyd_home() / "registered-weights.json"


def _registered_path(name: str) -> Path | None:
    path = read_json(_registry_file()).get(name)
    return Path(path) if isinstance(path, str) else None


# --- locating and checking ---------------------------------------------------------


@dataclass(frozen=True)
class _Location:
    path: Path  # what resolve() returns: the file of a one-file entry, else the folder
    files: dict[str, Path]  # lock path -> file on disk
    source: str  # "registered", "local", "hf-cache" or "weights-dir"


def _location(entry: LockEntry, root: Path, source: str) -> _Location:
    if entry.single_file and root.is_file():
        return _Location(root, {entry.files[0].path: root}, source)
    return _Location(root, {f.path: root / f.path for f in entry.files}, source)


def _hf_cache_location(entry: LockEntry, wdir: Path) -> _Location | None:
    from huggingface_hub import try_to_load_from_cache

    found = {}
    for f in entry.files:
        hit = try_to_load_from_cache(entry.repo, f.path, cache_dir=wdir, revision=entry.revision)
        if not isinstance(hit, str):  # None, or the "known not to exist" marker
            return None
        found[f.path] = Path(hit)
    return snapshot_location(entry, found)


def snapshot_location(entry: LockEntry, files: dict[str, Path]) -> _Location:
    """The location of files found in (or just downloaded to) one Hugging Face cache snapshot."""
    first = entry.files[0].path
    snapshot = files[first].parents[first.count("/")]  # "a/b.json" lives two levels under the snapshot
    return _Location(files[first] if entry.single_file else snapshot, files, "hf-cache")


def _locate(entry: LockEntry, wdir: Path) -> _Location | None:
    registered = _registered_path(entry.name)
    if registered is not None and registered.exists():
        return _location(entry, registered, "registered")
    if entry.local is not None:
        folder = entry.local_dir()
        return _location(entry, folder, "local") if folder.is_dir() else None
    if not entry.files:
        return None
    hit = _hf_cache_location(entry, wdir)
    if hit is not None:
        return hit
    folder = wdir / entry.name
    files = {f.path: folder / f.path for f in entry.files}
    if not all(p.is_file() for p in files.values()):
        return None
    return _Location(files[entry.files[0].path] if entry.single_file else folder, files, "weights-dir")


def _check_file(locked: LockedFile, path: Path, progress: Progress | None, full: bool = False,
                hashes: bool = True) -> str | None:
    """What is wrong with one file, or None if it matches the lock (as far as the lock knows; sizes only
    unless ``hashes``)."""
    if not path.is_file():
        return f"{path}: file missing"
    size = path.stat().st_size
    if locked.size is not None and size != locked.size:
        return f"{path}: {size} bytes, weights.lock expects {locked.size}"
    if locked.sha256 is not None and hashes:
        actual = sha256_file(path, progress, full=full)
        if actual != locked.sha256:
            return f"{path}: sha256 is {actual}, weights.lock expects {locked.sha256}"
    return None


def check_folder(entry: LockEntry, folder: Path, *, full: bool = False, hashes: bool = True,
                 progress: Progress | None = None) -> None:
    """Raise WeightsError unless the files under ``folder`` match ``entry``'s sizes and (``hashes``) sha256."""
    for locked in entry.files:
        problem = _check_file(locked, folder / locked.path, progress, full, hashes)
        if problem is not None:
            raise WeightsError(f"model '{entry.name}': {problem}", _fix_hint(entry, "local"))


def _fix_hint(entry: LockEntry, source: str) -> str:
    name = entry.name
    if source == "registered":
        return f"register the right file with `storyd weights add {name} PATH`, or `storyd weights pull {name}`"
    if source == "local":
        return f"restore it with `git checkout {entry.local}`, or re-pin it with `storyd weights lock-fill {name}`"
    return f"delete it and run `storyd weights pull {name}` again"


def verify_entry(entry: LockEntry, weights_dir: Path | None = None, *, check: bool = True,
                 progress: Progress | None = None, full: bool = False) -> VerifyResult:
    """Find ``entry`` and (``check``) compare its files with the lock; reports problems, never raises them.

    ``full`` re-hashes every file instead of trusting the hash cache."""
    if entry.url is not None:
        return verify_installed(entry, paths.weights_dir(weights_dir), check, progress, full=full)
    loc = _locate(entry, paths.weights_dir(weights_dir))
    if loc is None:
        message = f"model '{entry.name}' is not on this machine"
        registered = _registered_path(entry.name)
        if registered is not None:
            message += f" (the path added for it, {registered}, is gone)"
        return VerifyResult(entry.name, "missing", None, message, missing_hint(entry))
    if check:
        for locked in entry.files:
            problem = _check_file(locked, loc.files[locked.path], progress, full)
            if problem is not None:
                return VerifyResult(entry.name, "corrupt", loc.path, f"model '{entry.name}': {problem}",
                                    _fix_hint(entry, loc.source))
    return VerifyResult(entry.name, "present" if entry.pinned else "unpinned", loc.path)


def check_location(entry: LockEntry, files: dict[str, Path], source: str, progress: Progress | None = None) -> None:
    """Raise WeightsError unless every file matches the lock."""
    for locked in entry.files:
        problem = _check_file(locked, files[locked.path], progress)
        if problem is not None:
            raise WeightsError(f"model '{entry.name}': {problem}", _fix_hint(entry, source))


def resolve(entry: LockEntry, weights_dir: Path | None = None, *, verify: bool = True,
            progress: Progress | None = None, full: bool = False) -> Path:
    """Where ``entry``'s weights are: the file of a one-file entry, else the folder its file paths are under.

    Raises WeightsError when they are missing, or (``verify``) when a size or sha256
    differs from the lock. Files whose sha256 the lock does not know are not checked.
    """
    result = verify_entry(entry, weights_dir, check=verify, progress=progress, full=full)
    if result.status in ("missing", "corrupt"):
        raise WeightsError(result.message or "", result.hint)
    assert result.path is not None
    return result.path


def verify(entries, weights_dir: Path | None = None, progress: Progress | None = None,
           full: bool = False) -> list[VerifyResult]:
    """Check each entry: present (matches the lock), unpinned (found, not fully checkable), missing, corrupt."""
    return [verify_entry(entry, weights_dir, progress=progress, full=full) for entry in entries]


def add(entry: LockEntry, path: Path, *, allow_unpinned: bool = False, progress: Progress | None = None,
        weights_dir: Path | None = None) -> Path:
    """Register a file (one-file entry) or folder the user already has; checked, never copied.

    A ``url`` entry's archive cannot be loaded as it is: it is checked, then unpacked
    (and converted) into ``<weights dir>/<name>/``, as `pull` does; that folder is returned.
    """
    path = Path(path).expanduser().resolve()
    if entry.local is not None:
        raise WeightsError(f"model '{entry.name}' ships with storyd at {entry.local}", "nothing to add")
    if not path.exists():
        raise WeightsError(f"{path} does not exist", "give the path of the file you downloaded")
    if entry.url is not None:
        return add_archive(entry, path, allow_unpinned, progress, paths.weights_dir(weights_dir))
    if entry.single_file and not path.is_file():
        raise WeightsError(f"model '{entry.name}' is one file ({entry.files[0].path}); {path} is a folder",
                           f"give the path of {entry.files[0].path.rsplit('/', 1)[-1]}")
    if not entry.pinned and not allow_unpinned:
        raise WeightsError(f"model '{entry.name}' is unpinned, so storyd cannot check {path}",
                           f"add it anyway with `storyd weights add {entry.name} PATH --allow-unpinned`")
    check_location(entry, _location(entry, path, "registered").files, "registered", progress)
    registry = read_json(_registry_file())
    registry[entry.name] = str(path)
    atomic_write_text(_registry_file(), json.dumps(registry, indent=2, sort_keys=True) + "\n")
    return path
