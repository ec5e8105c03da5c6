"""Converters a weights.lock ``url`` entry can name: unpacked archive in, loadable model folder out.

Each is ``convert(source, out)``: ``source`` is the unpacked archive, ``out`` a folder
to create. The version is written into the installed folder's stamp; raising it makes
folders converted by an older storyd stale, so `storyd weights pull` converts again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

# name -> (module, function, version)
CONVERTERS: dict[str, tuple[str, str, int]] = {
    "dreamsim": ("storyd.eval.dreamsim_convert", "convert_release", 1),
}


def converter(name: str) -> Callable[[Path, Path], None]:
    module, function, _ = CONVERTERS[name]
    return getattr(importlib.import_module(module), function)


def converter_id(name: str | None) -> str | None:
    """``name@version``, as the installed folder's stamp records it; None when nothing is converted."""
    return None if name is None else f"{name}@{CONVERTERS[name][2]}"
