"""The evaluation suite: render a story set with CSA off and on, ready for `storyd eval`.

``storyd eval-suite`` renders ``stories/eval/toy`` with the embedded toy model into
``out/eval/<mode>/<story>/``; ``storyd eval out/eval/off out/eval/on`` then prints the
table. Rendering resumes: panels whose inputs are unchanged are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from storyd.errors import InputError
from storyd.progress import NullProgress, Progress

CSA_MODES = ("off", "on")


def story_files(stories_dir: Path, limit: int | None = None) -> list[Path]:
    files = sorted(p for p in Path(stories_dir).iterdir() if p.suffix in (".yaml", ".yml", ".txt"))
    if not files:
        raise InputError(f"{stories_dir} holds no story files", "give a folder of .yaml stories")
    return files[:limit] if limit else files


def run_suite(
    stories_dir: Path | str,
    out_root: Path | str,
    model: str = "toy",
    csa_modes: Sequence[str] = CSA_MODES,
    *,
    limit: int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> list[Path]:
    """Render every story of ``stories_dir`` once per CSA mode; returns one run folder per mode.

    ``progress`` gets a note per story and mode, and follows each story's panels.
    """
    from storyd.comic import ComicOptions, render_comic
    from storyd.story.loader import load_story

    unknown = [m for m in csa_modes if m not in CSA_MODES]
    if unknown:
        raise InputError(f"unknown CSA mode '{unknown[0]}'", f"use {' and/or '.join(CSA_MODES)}")
    files = story_files(Path(stories_dir), limit)
    out_root = Path(out_root)
    progress = progress or NullProgress()
    for mode in csa_modes:
        for path in files:
            story = load_story(path)
            progress.note(f"CSA {mode}: {story.name}")
            options = ComicOptions(out_dir=out_root / mode / story.name, model=model,
                                   consistency={"enabled": mode == "on"}, device=device)
            render_comic(story, options, progress)
    return [out_root / mode for mode in csa_modes]

