"""Unpacking a downloaded archive, refusing any member that would land outside the target folder."""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path

from storyd.errors import WeightsError

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_member(name: str, mode: int) -> str | None:
    """Why an archive member may not be unpacked, or None: absolute, ``..``, drive letters, links."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path"
    if ".." in parts:
        return "climbs out of the folder with '..'"
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    return None


def extract_zip(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` after checking every member name; a bad archive is a WeightsError."""
    hint = "it is not the archive weights.lock names: delete it and check the entry's url"
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                problem = unsafe_member(info.filename, info.external_attr >> 16)
                if problem:
                    raise WeightsError(f"{archive.name}: member '{info.filename}' {problem}", hint)
            root = dest.resolve()
            for info in members:
                target = (dest / info.filename).resolve()
                if target != root and root not in target.parents:  # belt and braces after the name check
                    raise WeightsError(f"{archive.name}: member '{info.filename}' lands outside {dest}", hint)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise WeightsError(f"{archive.name} is not a readable zip archive: {exc}", hint) from exc
