"""`storyd convert`: the published plain-text story format to storyd YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from storyd.cli.common import Output
from storyd.cli.options import ForceOpt, out_option
from storyd.errors import InputError


def convert(
    story: Annotated[Path, typer.Argument(help="A story in the published plain-text format (.txt).")],
    out: Annotated[
        Path | None, out_option("Where to write the YAML ('-' for stdout; default: beside the input).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Write the YAML equivalent of a plain-text story."""
    from storyd.fsutil import atomic_write_text
    from storyd.story.loader import load_story
    from storyd.story.text_format import story_to_yaml

    if story.suffix.lower() != ".txt":
        raise InputError(f"{story} is not a .txt story", "convert reads the published plain-text format")
    text = story_to_yaml(load_story(story))
    output = Output()
    if out is not None and str(out) == "-":
        output.out.file.write(text)
        return
    target = out or story.with_suffix(".yaml")
    if target.exists() and not force:
        raise InputError(f"{target} already exists", "pass --force to overwrite it, or choose another path with -o")
    atomic_write_text(target, text)
    output.info(f"Wrote {target}")
