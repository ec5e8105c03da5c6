"""Helpers the tests share that are not fixtures: the checkout's root, and reading a comic's panels."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def panel_bytes(out: Path) -> dict[str, bytes]:
    """The PNG bytes of each panel in a `storyd comic` output folder, by file name."""
    return {p.name: p.read_bytes() for p in sorted((out / "panels").glob("*.png"))}
