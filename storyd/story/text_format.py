"""The published StoryDiffusion plain-text story format, and its conversion to YAML.

The format, as the published tool reads it from two text boxes, in one file here:

    [Bob] a man with short black hair, wearing a black suit
    [Alice] a woman with long red hair, wearing a green dress

    [Bob] at home, reading the newspaper #The paper says there is treasure in the forest.
    [NC] a dark forest path at dusk #Night falls.
    [Bob] [Alice] walking together through the forest

The leading block (up to the first blank line) defines characters, one `[Name]
description` per line. Every later non-blank line is a panel: its `[Name]` tags say
who is shown (`[NC]`: nobody), and the text after the last `#` is the caption.
Lines starting with `//` are comments.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from storyd.errors import InputError
from storyd.story.model import ESCAPE_HINT, TAG_RE, Character, Panel, Story

_DEFINITION_RE = re.compile(r"^\[([^\[\]]+)\]\s*(.+)$")


def parse_text_story(path: Path, text: str) -> Story:
    lines = [(i + 1, raw.rstrip()) for i, raw in enumerate(text.splitlines())]
    lines = [(n, line) for n, line in lines if not line.lstrip().startswith("//")]
    while lines and not lines[0][1].strip():
        lines.pop(0)
    blank = next((k for k, (_, line) in enumerate(lines) if not line.strip()), None)
    if blank is None:
        raise InputError(
            "no blank line separates the character lines from the panel lines",
            "put the '[Name] description' lines first, then a blank line, then one panel per line",
            path=path,
        )
    characters: dict[str, Character] = {}
    for number, line in lines[:blank]:
        match = _DEFINITION_RE.match(line.strip())
        if not match or match.group(1).strip() == "NC":
            raise InputError(
                f"'{line.strip()}' is not a character line",
                "write '[Name] how they look'",
                path=path,
                line=number,
                col=1,
            )
        name = match.group(1).strip()
        if name in characters:
            raise InputError(
                f"character [{name}] is defined twice", "keep one line for it", path=path, line=number, col=1
            )
        characters[name] = Character(name, match.group(2).strip(), line=number)
    panels: list[Panel] = []
    for number, line in lines[blank:]:
        if not line.strip():
            continue
        prompt, caption = line, None
        if "#" in line:
            prompt, caption = line.rsplit("#", 1)
            caption = caption.strip() or None
        names = [t.strip() for t in TAG_RE.findall(prompt)]
        for name in names:
            if name != "NC" and name not in characters:
                col = line.index(f"[{name}") + 1
                raise InputError(
                    f"the panel names [{name}], who is not defined in the character lines",
                    f"add a line '[{name}] how they look' before the first blank line; {ESCAPE_HINT}",
                    path=path,
                    line=number,
                    col=col,
                )
        prompt = re.sub(r"(?<!\\)\[NC\]\s*", "", prompt).strip()
        shown = tuple(dict.fromkeys(n for n in names if n != "NC"))
        if not prompt:
            raise InputError(
                "the panel has no prompt", "describe what it shows before the '#'", path=path, line=number, col=1
            )
        panels.append(Panel(len(panels), prompt, shown, caption=caption, line=number))
    if not panels:
        raise InputError("the story has no panel lines", "add one panel per line after the blank line", path=path)
    title = path.stem.replace("_", " ").replace("-", " ").title()
    return Story(title=title, path=path, characters=characters, panels=tuple(panels))


def story_to_yaml(story: Story) -> str:
    """The YAML equivalent of a story (what `storyd convert` writes)."""
    data: dict = {"title": story.title, "seed": story.seed}
    data["characters"] = {c.name: c.description for c in story.characters.values()}
    panels = []
    for panel in story.panels:
        entry: dict = {"prompt": panel.prompt}
        if not panel.characters and TAG_RE.search(panel.prompt) is None:
            entry["characters"] = []
        if panel.caption:
            entry["caption"] = panel.caption
        panels.append(entry)
    data["panels"] = panels
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
