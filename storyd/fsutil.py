"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one.

A write goes to ``.<name>.<pid>-<random>.tmp`` beside the file, then one rename; a
process killed mid-write leaves that temporary behind, and `remove_stale_temporaries`
removes those whose process is gone. A disk bank's spill folder (``.storyd-bank-<pid>-...``)
is cleaned up the same way by `remove_dead_spill_folders`. A full disk or a folder that cannot
be written is an InputError naming the file, not a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from storyd.errors import InputError

_TEMPORARY = re.compile(r"\..+\.(\d+)-[0-9a-f]{12}\.tmp")
SPILL_PREFIX = ".storyd-bank-"  # a disk bank's spill folder; an output folder holding one is still storyd's
_SPILL = re.compile(re.escape(SPILL_PREFIX) + r"(\d+)-.+")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error(path: Path, exc: OSError) -> InputError | None:
    """The one-line error for a write that failed for want of space or permission, else None."""
    if exc.errno in _NO_SPACE:
        return InputError(f"no space left on the disk to write {path}",
                          "free some space and run again: what was written before is kept")
    if exc.errno in _NOT_WRITABLE:
        return InputError(f"cannot write {path}: {os.strerror(exc.errno)}",
                          "make the folder writable, or choose another one")
    return None


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 lets the umask decide the final permissions, as for any new file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise write_error(path, exc) or exc from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and (clear := write_error(path, exc)):
            raise clear from None
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries that `atomic_open` left in ``folder`` when its process died; return them."""
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = _TEMPORARY.fullmatch(entry.name)
        if match and not entry.is_symlink() and entry.is_file() and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def spill_prefix() -> str:
    """The name a disk bank's spill folder starts with: it carries this process's id."""
    return f"{SPILL_PREFIX}{os.getpid()}-"


def remove_dead_spill_folders(folder: Path) -> list[Path]:
    """Delete the spill folders that a killed run's disk bank left in ``folder``; return them."""
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = _SPILL.fullmatch(entry.name)
        if match and not entry.is_symlink() and entry.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    """Whether another process with this id runs (this one writes nothing while it cleans up)."""
    if pid == os.getpid():
        return False  # a dead run's id, reused: in a container ids repeat from run to run
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    return True


def file_sha256(path: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    """The sha256 of a file, read in 8 MB chunks; `on_chunk(bytes_done)` follows progress."""
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
            done += len(chunk)
            if on_chunk:
                on_chunk(done)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
