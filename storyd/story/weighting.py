"""Prompt weighting in the A1111 convention SD users write: `(word:1.2)` scales a phrase's weight,
`(word)` by 1.1, nested groups multiply, and `\\(` / `\\)` are literal parentheses. A parenthesis
without its partner is text. Square brackets are not weighting here: they tag characters
(storyd.story.model.TAG_RE), and an escaped `\\[...]` reaches the model as written.
"""

from __future__ import annotations

import re

PLAIN_WEIGHT = 1.1  # `(word)` without a number
_WEIGHT_RE = re.compile(r"^(.*):\s*(\d+(?:\.\d*)?|\.\d+)\s*$", re.S)


def weighted_fragments(text: str) -> list[tuple[str, float]]:
    """`text` as (fragment, weight) runs, in order, adjacent runs of one weight merged."""
    runs: list[tuple[str, float]] = []
    _parse(text, 1.0, runs)
    merged: list[tuple[str, float]] = []
    for fragment, weight in runs:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + fragment, weight)
        elif fragment:
            merged.append((fragment, weight))
    return merged


def plain_text(text: str) -> str:
    """What the text encoder reads: the words of `text` without the weighting syntax."""
    return "".join(fragment for fragment, _ in weighted_fragments(text))


def is_weighted(text: str) -> bool:
    """Whether `text` uses the weighting syntax (or escapes), so its plain text differs from it."""
    return plain_text(text) != text


def _parse(text: str, weight: float, runs: list[tuple[str, float]]) -> None:
    buffer: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1 : i + 2] in ("(", ")"):
            buffer.append(text[i + 1])
            i += 2
            continue
        end = _closing(text, i) if char == "(" else None
        if end is None:
            buffer.append(char)
            i += 1
            continue
        runs.append(("".join(buffer), weight))
        buffer = []
        inner = text[i + 1 : end]
        match = _WEIGHT_RE.match(inner)
        inner, scale = (match.group(1), float(match.group(2))) if match else (inner, PLAIN_WEIGHT)
        _parse(inner, weight * scale, runs)
        i = end + 1
    runs.append(("".join(buffer), weight))


def _closing(text: str, start: int) -> int | None:
    """The index of the `)` that closes the `(` at `start`, or None when it is never closed."""
    depth = 0
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None
