"""Helpers the tests share that are not fixtures: the checkout's root, running the CLI, reading a comic's panels."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def panel_bytes(out: Path) -> dict[str, bytes]:
    """The PNG bytes of each panel in a `storyd comic` output folder, by file name."""
    return {p.name: p.read_bytes() for p in sorted((out / "panels").glob("*.png"))}


def invoke(args: list, **kwargs):
    """`storyd ARGS` in-process, as the `cli` fixture runs it: an exception the CLI does not turn into
    an exit code fails the test instead of hiding in the result."""
    from typer.testing import CliRunner

    from storyd.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def one_line_error(result, *needles: str) -> None:
    """Exit 2 with one `Error:` line naming each of `needles` (the runner also catches libraries'
    own log lines, which the CLI quiets)."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares `width` x `height` pixels but holds none: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path
