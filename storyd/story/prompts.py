"""The prompt builder: a story's panels become the exact text each panel is drawn from.

Character names become their descriptions, the style template wraps the result, and
the negative prompt gathers the story's and the style's. Prompts longer than the text
encoder's window are cut by the model; `build_prompts` says which words are lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storyd.story.model import TAG_RE, Panel, Story, unescape_brackets
from storyd.story.styles import STYLES

_TAG_SPACE_RE = re.compile(TAG_RE.pattern + r"\s*")


@dataclass(frozen=True)
class PanelPrompt:
    index: int
    prompt: str  # what the model reads
    negative: str
    base: str  # the prompt with descriptions but without the style template (for evaluation)
    characters: tuple[str, ...]
    lost: str | None = None  # words past the token limit, or None


def describe_panel(story: Story, panel: Panel) -> str:
    """The panel's prompt with each shown character's name replaced by its description."""
    text = _TAG_SPACE_RE.sub(lambda m: "" if m.group(1).strip() == "NC" else f"{{{m.group(1).strip()}}} ", panel.prompt)
    missing: list[str] = []
    for name in panel.characters:
        description = story.characters[name].description
        text, hits = re.subn(r"\{" + re.escape(name) + r"\}", lambda _m, d=description: d, text)
        if not hits:
            text, hits = re.subn(rf"\b{re.escape(name)}\b", lambda _m, d=description: d, text, count=1)
        if not hits:
            missing.append(description)
    text = re.sub(r"\s+", " ", text).strip(" ,")
    if missing:
        text = ", ".join([" and ".join(missing), text]) if text else " and ".join(missing)
    return unescape_brackets(re.sub(r"\s+([,.;!?])", r"\1", text))


def build_prompts(story: Story, tokenizer=None) -> list[PanelPrompt]:
    """One PanelPrompt per panel. With a tokenizer, report the words lost to truncation."""
    style = STYLES[story.style]
    negative = ", ".join(p for p in (story.negative.strip(), style.negative) if p)
    prompts = []
    for panel in story.panels:
        base = describe_panel(story, panel)
        prompt = style.template.format(prompt=base)
        lost = lost_words(tokenizer, prompt) if tokenizer is not None else None
        prompts.append(PanelPrompt(panel.index, prompt, negative, base, panel.characters, lost))
    return prompts


def lost_words(tokenizer, text: str) -> str | None:
    """The tail of `text` that falls past the tokenizer's window, or None if it all fits."""
    window = tokenizer.model_max_length - 2  # the start and end tokens take two places
    tokens = tokenizer.tokenize(text)
    if len(tokens) <= window:
        return None
    text = tokenizer.decode(tokenizer.convert_tokens_to_ids(tokens[window:]))
    return re.sub(r"\s+([,.;:!?])", r"\1", text).strip()
