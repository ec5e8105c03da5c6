"""The diffusers config folders storyd ships for single-file checkpoints.

``from_single_file(path, config=folder, local_files_only=True)`` needs each
component's config, and a tokenizer, to load a checkpoint with no hub call.
The repository ships the small JSON files (``storyd/configs/<preset>``); the
1.5 MB CLIP vocabulary is generated here, from each tokenizer folder's
``tokenizer_config.json`` (SDXL's second tokenizer and SD2.1's pad with "!").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from storyd.errors import WeightsError
from storyd.weights.lock import LockEntry
from storyd.weights.paths import storyd_home


def prepare_config_dir(entry: LockEntry, cache_dir: Path | None = None) -> Path:
    """Copy ``entry``'s shipped config folder into ``cache_dir/configs/`` with tokenizer files; return it.

    ``cache_dir`` defaults to the storyd home. Safe to call every run: the JSON
    files are refreshed, the vocabulary is written once.
    """
    source = entry.config_dir()
    if source is None:
        raise WeightsError(f"model '{entry.name}' has no config folder in weights.lock",
                           "only single-file text-to-image checkpoints need one")
    if not (source / "model_index.json").is_file():
        raise WeightsError(f"config folder {source} has no model_index.json",
                           "restore it with `git checkout storyd/configs`")
    target = (cache_dir if cache_dir is not None else storyd_home()) / "configs" / source.name
    for file in sorted(source.rglob("*.json")):
        dest = target / file.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists() or dest.read_bytes() != file.read_bytes():
            shutil.copyfile(file, dest)
    for tok_config in sorted(target.glob("*/tokenizer_config.json")):
        _write_tokenizer(tok_config)
    return target


def _write_tokenizer(tok_config: Path) -> None:
    from storyd.render.tokenizer import write_tokenizer_files

    folder = tok_config.parent
    pad = json.loads(tok_config.read_text(encoding="utf-8"))["pad_token"]
    write_tokenizer_files(folder, pad_token=pad)
