"""What every place weights are kept shares: the hash cache, the verify result, the hint for a missing model.

Both store.py (files found or registered) and installed.py (folders unpacked from an
archive) build on these; neither needs the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from storyd.errors import StorydError
from storyd.fsutil import atomic_write_text, file_sha256
from storyd.progress import Progress
from storyd.weights import paths
from storyd.weights.lock import LockEntry


def human_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def sha256_file(path: Path, progress: Progress | None = None, *, full: bool = False) -> str:
    """The file's sha256: from the hash cache while the file is unchanged, else (or ``full``) read and hashed.

    An entry holds only while the file's size, mtime, inode and ctime are unchanged: a user can set
    the mtime back after editing a file in place, not the ctime."""
    path = Path(path)
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}
    cache_file = paths.storyd_home() / "sha256-cache.json"
    hit = read_json(cache_file).get(key)
    if not full and isinstance(hit, dict) and all(hit.get(k) == v for k, v in stamp.items()):
        return hit["sha256"]
    sha = file_sha256(path, hash_reporter(path, stat.st_size, progress))
    cache = read_json(cache_file)  # re-read: another process may have added entries meanwhile
    cache[key] = {**stamp, "sha256": sha}
    try:
        atomic_write_text(cache_file, json.dumps(cache, indent=1, sort_keys=True))
    except (OSError, StorydError):
        pass  # a cache that cannot be written (read-only or full home) only costs a re-hash next time
    return sha


def hash_reporter(path: Path, size: int, progress: Progress | None):
    """`file_sha256`'s chunk callback reporting to ``progress`` as task "sha256 <name>", or None."""
    return (lambda done: progress.update(f"sha256 {path.name}", done, size, unit="bytes")) if progress else None


def read_json(path: Path) -> dict:
    """A JSON object file of the storyd home (hash cache, registry), or {} when it is gone or damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # a cache or registry that is gone or damaged is rebuilt, not fatal
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class VerifyResult:
    name: str
    status: str  # "present" (matches the lock), "unpinned" (found, not fully checkable), "missing", "corrupt"
    path: Path | None  # where the model was found
    message: str | None = None  # what is wrong, for missing/corrupt
    hint: str | None = None  # what to do about it


def missing_hint(entry: LockEntry) -> str:
    if entry.local is not None:
        return f"it ships in the repository at {entry.local}; restore it with `git checkout {entry.local}`"
    flag = "" if entry.pinned else " --allow-unpinned"
    have = entry.files[0].path if entry.url is not None else "the file"
    return (
        f"run `storyd weights pull {entry.name}{flag}` ({human_size(entry.size)}), "
        f"or `storyd weights add {entry.name} PATH` if you have {have}"
    )
