"""`storyd layout`: lay out panels that already exist, without a model, in seconds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from storyd.cli.common import Output
from storyd.cli.options import ForceOpt, JsonOpt, QuietOpt, out_option
from storyd.errors import InputError
from storyd.story.model import TEMPLATES


def layout(
    story: Annotated[Path, typer.Argument(help="The story file (.yaml, or .txt in the published format).")],
    panels: Annotated[
        Path | None,
        typer.Option(
            "--panels", help="Folder of 001.png, 002.png, ... in story order. Default: out/<story name>/panels."
        ),
    ] = None,
    out: Annotated[Path | None, out_option("Output folder. Default: out/<story name>.")] = None,
    template: Annotated[
        str | None, typer.Option("--template", help=f"Override the story's layout template: {', '.join(TEMPLATES)}.")
    ] = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Lay existing panel images out as comic pages: PNG per page, a PDF, and a CBZ if the story asks."""
    from storyd.layout import lettering_warnings, load_panel_images, render_pages, write_pages
    from storyd.layout.export import output_paths
    from storyd.output import layout_into
    from storyd.story.loader import load_story

    output = Output(json_mode=json, quiet=quiet)
    if template is not None and template not in TEMPLATES:
        raise InputError(f"unknown template {template!r}", hint=f"use one of {', '.join(TEMPLATES)}")
    parsed = load_story(story)
    if template is not None:
        parsed = replace(parsed, layout=replace(parsed.layout, template=template))
    out_dir = out if out is not None else Path("out") / parsed.name
    panel_dir = panels if panels is not None else Path("out") / parsed.name / "panels"
    images = load_panel_images(panel_dir, len(parsed.panels))
    output.info(f"Laying out {len(images)} panels from {panel_dir} ({parsed.layout.template} template)")
    for warning in lettering_warnings(parsed):
        output.warn(warning)
    pages = render_pages(parsed, images)
    files = output_paths(out_dir, len(pages), parsed.layout)
    written = layout_into(
        out_dir, files, lambda: write_pages(pages, out_dir, settings=parsed.layout, force=force, title=parsed.title)
    )
    output.result(
        {"pages": len(pages), "files": [str(p) for p in written], "template": parsed.layout.template},
        lambda console: console.print(
            f"Wrote {len(pages)} page(s) to {out_dir / 'pages'}, and "
            + ", ".join(str(p) for p in written if p.suffix != ".png")
        ),
    )
