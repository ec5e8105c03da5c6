"""Deterministic seeds derived from the story seed: every random draw in storyd starts here."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on `parts` (not on call order or other draws)."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def panel_seed(story_seed: int, index: int) -> int:
    """The seed of panel `index` (0-based) when the story does not set one; fits in 32 bits."""
    return derive_seed("panel", story_seed, index) % 2**32

