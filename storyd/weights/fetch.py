"""The only code in storyd that touches the network: ``pull`` and the maintainer's ``fill_lock``.

Hub entries go through huggingface_hub; ``url`` entries through download.py (urllib).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from storyd.errors import WeightsError
from storyd.progress import Progress
from storyd.weights import paths
from storyd.weights.checks import sha256_file
from storyd.weights.lock import LockedFile, LockEntry, did_you_mean, load_lock, write_lock
from storyd.weights.store import check_location, snapshot_location

_NET_HINT = "check the network connection (and `hf auth login` if the repository is gated)"


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the hub client raises when the hub can't be reached or refuses: HTTP, transport and cache misses."""
    from huggingface_hub import errors

    # huggingface_hub >= 1.0 talks httpx, whose transport errors are not OSErrors; requests' errors are.
    return (errors.HfHubHTTPError, OSError, getattr(errors, "HTTPError", OSError))


def _forwarding_tqdm(progress: Progress, label: str):
    """A tqdm class for hf_hub_download that reports to ``progress`` instead of drawing a bar."""
    from huggingface_hub.utils import tqdm

    class _Forward(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.storyd_done = kwargs.get("initial") or 0
            self.storyd_total = kwargs.get("total")

        def update(self, n=1):
            self.storyd_done += n or 0
            progress.update(label, self.storyd_done, self.storyd_total, unit="bytes")

    return _Forward


def _download(repo: str, filename: str, revision: str | None, cache_dir: Path, progress: Progress | None) -> Path:
    from huggingface_hub import hf_hub_download

    tqdm_class = _forwarding_tqdm(progress, f"download {filename}") if progress else None
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir, tqdm_class=tqdm_class))
    except _network_errors() as exc:
        raise WeightsError(f"could not download {repo}/{filename}: {exc}", _NET_HINT) from exc


def pull(entry: LockEntry, weights_dir: Path | None = None, progress: Progress | None = None, *,
         allow_unpinned: bool = False) -> Path:
    """Download ``entry`` at its locked commit into the weights dir, check every file; return resolve()'s path."""
    if entry.local is not None:
        raise WeightsError(f"model '{entry.name}' ships with storyd at {entry.local}", "nothing to pull")
    if not entry.pinned and not allow_unpinned:
        raise WeightsError(
            f"model '{entry.name}' is unpinned, so storyd cannot check what it downloads",
            f"pull it anyway with `storyd weights pull {entry.name} --allow-unpinned`, "
            f"or pin it first with `storyd weights lock-fill {entry.name}`",
        )
    if not entry.files:
        raise WeightsError(f"model '{entry.name}' lists no files", f"run `storyd weights lock-fill {entry.name}`")
    if entry.url is not None:
        return _pull_archive(entry, paths.weights_dir(weights_dir), progress)
    cache_dir = paths.weights_dir(weights_dir)
    files = {f.path: _download(entry.repo, f.path, entry.revision, cache_dir, progress) for f in entry.files}
    check_location(entry, files, "hf-cache", progress)
    return snapshot_location(entry, files).path


def fill_lock(name: str, lock_path: Path | None = None, *, revision: str | None = None,
              weights_dir: Path | None = None, api=None, progress: Progress | None = None) -> LockEntry:
    """Maintainer command: write the commit and each file's size and sha256 into weights.lock.

    A hub entry asks the hub (``api``: an ``HfApi``) which commit ``revision`` (default:
    the locked one, else main) is, and takes sizes and LFS sha256 values from its file
    metadata; small non-LFS files are downloaded and hashed. A local entry lists and
    hashes every file in its folder. A ``url`` entry's archive is downloaded (to a
    temporary file, deleted after) and hashed; `pull` then unpacks and converts it. A
    hash that changes at an unchanged commit (or url) is an error: the lock or the
    source is wrong and a person has to look.
    """
    lock = load_lock(lock_path)
    entry = lock.get(name)
    if entry.local is not None:
        filled = replace(entry, files=_hash_local(entry, progress))
    elif entry.url is not None:
        filled = _fill_from_url(entry, paths.weights_dir(weights_dir), progress)
    else:
        filled = _fill_from_hub(entry, revision, paths.weights_dir(weights_dir), api, progress)
    write_lock(lock.replace(filled))
    return filled


def _hash_local(entry: LockEntry, progress: Progress | None) -> tuple[LockedFile, ...]:
    folder = entry.local_dir()
    if folder is None or not folder.is_dir():
        raise WeightsError(f"model '{entry.name}': folder {entry.local} does not exist", "build it first")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not paths:
        raise WeightsError(f"model '{entry.name}': folder {entry.local} is empty", "build it first")
    return tuple(
        LockedFile(p.relative_to(folder).as_posix(), p.stat().st_size, sha256_file(p, progress)) for p in paths
    )


def _fill_from_hub(entry: LockEntry, revision: str | None, cache_dir: Path, api, progress) -> LockEntry:
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        info = api.model_info(entry.repo, revision=revision or entry.revision or "main", files_metadata=True)
    except _network_errors() as exc:
        raise WeightsError(f"could not read {entry.repo} from the hub: {exc}", _NET_HINT) from exc
    commit = info.sha
    siblings = {s.rfilename: s for s in info.siblings or ()}
    files = []
    for locked in entry.files:
        sib = siblings.get(locked.path)
        if sib is None:
            raise WeightsError(
                f"model '{entry.name}': {entry.repo}@{commit[:12]} has no file '{locked.path}'",
                did_you_mean(locked.path, siblings) + "fix the path in weights.lock",
            )
        if sib.lfs is not None:
            size, sha = sib.lfs.size, sib.lfs.sha256
        else:  # small git file: the hub gives its git blob id, not a sha256
            path = _download(entry.repo, locked.path, commit, cache_dir, progress)
            size, sha = path.stat().st_size, sha256_file(path)
        if commit == entry.revision and locked.sha256 not in (None, sha):
            raise WeightsError(
                f"model '{entry.name}': {locked.path} at {commit[:12]} has sha256 {sha} on the hub, "
                f"weights.lock says {locked.sha256}",
                "check which is right and edit weights.lock by hand",
            )
        files.append(LockedFile(locked.path, size, sha))
    note = f"pinned by `storyd weights lock-fill {entry.name}` from the hub's file metadata"
    return replace(entry, revision=commit, files=tuple(files), note=note)


def _download_archive(entry: LockEntry, wdir: Path, progress: Progress | None):
    """Download the entry's archive into a temporary folder in ``wdir``: (folder, file, size, sha256)."""
    from storyd.weights.download import download_url

    wdir.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix=f".{entry.name}.download.", dir=wdir)
    archive = Path(tmp.name) / entry.files[0].path
    try:
        size, sha = download_url(entry.url, archive, progress)
    except BaseException:
        tmp.cleanup()
        raise
    return tmp, archive, size, sha


def _pull_archive(entry: LockEntry, wdir: Path, progress: Progress | None) -> Path:
    """Download, check and install a ``url`` entry; an installed folder that checks out is kept as it is."""
    from storyd.weights.installed import archive_problem, install, install_folder, installed_problem

    folder = install_folder(entry, wdir)
    if folder.is_dir() and installed_problem(entry, folder, check=True, progress=progress) is None:
        return folder
    tmp, archive, size, sha = _download_archive(entry, wdir, progress)
    with tmp:
        problem = archive_problem(entry, entry.url, size, sha)
        if problem is not None:
            fix = f"re-pin with `storyd weights lock-fill {entry.name}`"
            raise WeightsError(problem, "run the command again; if it persists the file at the url changed, "
                               f"and a maintainer must check it and {fix}")
        return install(entry, archive, sha, wdir, progress)


def _fill_from_url(entry: LockEntry, wdir: Path, progress: Progress | None) -> LockEntry:
    tmp, _, size, sha = _download_archive(entry, wdir, progress)
    tmp.cleanup()
    locked = entry.files[0]
    if locked.sha256 not in (None, sha):
        raise WeightsError(
            f"model '{entry.name}': {entry.url} now has sha256 {sha}, weights.lock says {locked.sha256}",
            "check which is right and edit weights.lock by hand",
        )
    note = f"pinned by `storyd weights lock-fill {entry.name}` from the downloaded archive"
    return replace(entry, files=(LockedFile(locked.path, size, sha),), note=note)
