"""Models installed from a ``url`` entry's archive: ``<weights dir>/<name>/`` plus a stamp.

The lock pins the archive, but what storyd loads is the folder unpacked (and converted)
from it, so the folder carries ``storyd-install.json``: the archive's size and sha256,
the converter and its version, and every installed file's size and sha256, hashed when
it was written. verify checks the folder against the stamp and the stamp against the
lock: a folder installed from another archive, or by an older converter, is stale.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from storyd.errors import WeightsError
from storyd.fsutil import atomic_write_text, file_sha256
from storyd.progress import Progress
from storyd.weights.archive import extract_zip
from storyd.weights.checks import VerifyResult, hash_reporter, missing_hint, sha256_file
from storyd.weights.converters import converter, converter_id
from storyd.weights.lock import LockedFile, LockEntry

STAMP = "storyd-install.json"


def install_folder(entry: LockEntry, weights_dir: Path) -> Path:
    return weights_dir / entry.name


def archive_problem(entry: LockEntry, where: str, size: int, sha256: str) -> str | None:
    """What is wrong with a downloaded or given archive, or None if it matches the lock (as far as it knows)."""
    locked = entry.files[0]
    if locked.size is not None and size != locked.size:
        return f"model '{entry.name}': {where}: {size} bytes, weights.lock expects {locked.size}"
    if locked.sha256 is not None and sha256 != locked.sha256:
        return f"model '{entry.name}': {where}: sha256 is {sha256}, weights.lock expects {locked.sha256}"
    return None


def install(entry: LockEntry, archive: Path, archive_sha256: str, weights_dir: Path,
            progress: Progress | None = None) -> Path:
    """Unpack ``archive``, convert it if the entry says so, stamp it, and swap it into place; return the folder."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = install_folder(entry, weights_dir)
    work = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=weights_dir))
    try:
        extracted = work / "unpacked"
        extract_zip(archive, extracted)
        model = extracted
        if entry.convert is not None:
            model = work / "converted"
            converter(entry.convert)(extracted, model)
        _write_stamp(entry, model, archive.stat().st_size, archive_sha256, progress)
        if target.exists():
            target.rename(work / "previous")
        model.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _write_stamp(entry: LockEntry, folder: Path, size: int, sha256: str, progress: Progress | None) -> None:
    # hashed directly, not through the hash cache: these paths are temporary until the swap
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stamp = {
        "name": entry.name,
        "url": entry.url,
        "archive": {"path": entry.files[0].path, "size": size, "sha256": sha256},
        "converter": converter_id(entry.convert),
        "files": [{"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
                   "sha256": file_sha256(p, hash_reporter(p, p.stat().st_size, progress))} for p in files],
    }
    atomic_write_text(folder / STAMP, json.dumps(stamp, indent=2, sort_keys=True) + "\n")


def installed_problem(entry: LockEntry, folder: Path, *, check: bool, progress: Progress | None = None,
                      full: bool = False) -> str | None:
    """What is wrong with an installed folder, or None; ``check`` also re-hashes every file."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
        archive, files = stamp["archive"], [LockedFile(**f) for f in stamp["files"]]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"{folder} has no readable {STAMP} ({type(exc).__name__}), so storyd did not install it"
    locked = entry.files[0]
    if locked.sha256 is not None and archive.get("sha256") != locked.sha256:
        return f"{folder} was installed from an archive with sha256 {archive.get('sha256')}, " \
               f"weights.lock pins {locked.sha256}"
    if stamp.get("converter") != converter_id(entry.convert):
        return f"{folder} was converted by {stamp.get('converter')}, this storyd converts with " \
               f"{converter_id(entry.convert)}"
    for file in files:
        path = folder / file.path
        if not path.is_file():
            return f"{path}: file missing"
        if path.stat().st_size != file.size:
            return f"{path}: {path.stat().st_size} bytes, {STAMP} records {file.size}"
        if check and sha256_file(path, progress, full=full) != file.sha256:
            return f"{path}: sha256 differs from the one {STAMP} records"
    return None


def verify_installed(entry: LockEntry, wdir: Path, check: bool, progress: Progress | None, *,
                     full: bool = False) -> VerifyResult:
    """A ``url`` entry: its unpacked (and converted) folder, checked against its stamp and the lock."""
    folder = install_folder(entry, wdir)
    if not folder.is_dir():
        return VerifyResult(entry.name, "missing", None, f"model '{entry.name}' is not on this machine",
                            missing_hint(entry))
    problem = installed_problem(entry, folder, check=check, progress=progress, full=full)
    if problem is not None:
        return VerifyResult(entry.name, "corrupt", folder, f"model '{entry.name}': {problem}",
                            f"run `storyd weights pull {entry.name}` again: it replaces the folder")
    return VerifyResult(entry.name, "present" if entry.pinned else "unpinned", folder)


def add_archive(entry: LockEntry, path: Path, allow_unpinned: bool, progress: Progress | None, wdir: Path) -> Path:
    """`storyd weights add` for a ``url`` entry: check the archive the user has, then install it as pull does."""
    name, archive = entry.name, entry.files[0].path
    if not path.is_file():
        raise WeightsError(f"model '{name}' is installed from one archive ({archive}); {path} is a folder",
                           f"give the path of {archive}")
    if not entry.pinned and not allow_unpinned:
        raise WeightsError(f"model '{name}' is unpinned, so storyd cannot check {path}",
                           f"add it anyway with `storyd weights add {name} PATH --allow-unpinned`")
    sha = sha256_file(path, progress)
    problem = archive_problem(entry, str(path), path.stat().st_size, sha)
    if problem is not None:
        raise WeightsError(problem, f"download {entry.url} again, or run `storyd weights pull {name}`")
    return install(entry, path, sha, wdir, progress)
