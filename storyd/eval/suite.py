"""The evaluation suite: render a story set with CSA off and on, ready for `storyd eval`.

``python -m storyd.eval.suite`` renders ``stories/eval/toy`` with the embedded toy
model into ``out/eval/<mode>/<story>/``; ``storyd eval out/eval/off out/eval/on``
then prints the table. Rendering resumes: panels whose inputs are unchanged are kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from storyd.errors import InputError, StorydError

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
    on_story: Callable[[str, str], None] | None = None,
) -> list[Path]:
    """Render every story of ``stories_dir`` once per CSA mode; returns one run folder per mode."""
    from storyd.comic import ComicOptions, render_comic
    from storyd.story.loader import load_story

    unknown = [m for m in csa_modes if m not in CSA_MODES]
    if unknown:
        raise InputError(f"unknown CSA mode '{unknown[0]}'", f"use {' and/or '.join(CSA_MODES)}")
    files = story_files(Path(stories_dir), limit)
    out_root = Path(out_root)
    for mode in csa_modes:
        for path in files:
            story = load_story(path)
            if on_story:
                on_story(mode, story.name)
            options = ComicOptions(out_dir=out_root / mode / story.name, model=model,
                                   consistency={"enabled": mode == "on"}, device=device)
            render_comic(story, options)
    return [out_root / mode for mode in csa_modes]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storyd.eval.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=Path, default=Path("stories/eval/toy"))
    parser.add_argument("--out", type=Path, default=Path("out/eval"))
    parser.add_argument("--model", default="toy")
    parser.add_argument("--limit", type=int, default=None, help="only the first N stories (sorted by name)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):  # before either library is first imported
        os.environ.setdefault(name, "error")
    try:
        runs = run_suite(args.stories, args.out, args.model, limit=args.limit, device=args.device,
                         on_story=lambda mode, name: print(f"CSA {mode}: {name}", file=sys.stderr))
    except StorydError as exc:
        print(f"Error: {exc.format()}", file=sys.stderr)
        return exc.exit_code
    print(" ".join(str(r) for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
