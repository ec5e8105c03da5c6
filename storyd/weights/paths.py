"""Where storyd keeps things: its home folder and the weights folder."""

from __future__ import annotations

import os
from pathlib import Path


def storyd_home() -> Path:
    """``$STORYD_HOME``, else ``~/.cache/storyd``: storyd's caches and its registry of added weights."""
    env = os.environ.get("STORYD_HOME")
    return Path(env) if env else Path.home() / ".cache" / "storyd"


def weights_dir(explicit: Path | None = None) -> Path:
    """``--weights-dir`` > ``$STORYD_WEIGHTS_DIR`` > the Hugging Face hub cache."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("STORYD_WEIGHTS_DIR") or os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)
