"""The prompt builder: a story's panels become the exact text each panel is drawn from.

Character names become their descriptions, the style template wraps the result, and
the negative prompt gathers the story's and the style's. A prompt may carry `(word:1.2)`
weighting (storyd.story.weighting); one longer than the text encoder's 75-token window is
read in chunks (storyd.render.prompt_encoding), so no word is lost: `build_prompts` counts
the tokens the encoder reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storyd.story.model import TAG_RE, Panel, Story, unescape_brackets
from storyd.story.styles import STYLES
from storyd.story.weighting import plain_text

CHUNK_TOKENS = 75  # a CLIP text encoder window (77) less its start and end tokens

_TAG_SPACE_RE = re.compile(TAG_RE.pattern + r"\s*")


@dataclass(frozen=True)
class PanelPrompt:
    index: int
    prompt: str  # what the model reads
    negative: str
    base: str  # the prompt with descriptions but without the style template (for evaluation)
    characters: tuple[str, ...]
    tokens: int | None = None  # tokens the text encoder reads (weighting syntax aside); None without a tokenizer

    @property
    def chunks(self) -> int:
        """How many 75-token windows the text encoder reads the prompt in (1 without a tokenizer)."""
        return max(1, -(-(self.tokens or 0) // CHUNK_TOKENS))


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
    """One PanelPrompt per panel. With a tokenizer, count the tokens each prompt takes."""
    style = STYLES[story.style]
    negative = ", ".join(p for p in (story.negative.strip(), style.negative) if p)
    prompts = []
    for panel in story.panels:
        base = describe_panel(story, panel)
        prompt = style.template.format(prompt=base)
        tokens = len(tokenizer.tokenize(plain_text(prompt))) if tokenizer is not None else None
        prompts.append(PanelPrompt(panel.index, prompt, negative, plain_text(base), panel.characters, tokens))
    return prompts

