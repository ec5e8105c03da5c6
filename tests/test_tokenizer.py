"""The planning tokenizer (no transformers) splits prompts exactly as the pipelines' CLIP tokenizer does."""

from __future__ import annotations

import pytest

from storyd.render.tokenizer import PromptTokenizer, load_clip_tokenizer

PROMPTS = [
    "a kid with red hair in a blue shirt standing on the beach",
    "Mia's (red:1.2) hat, [SALE] 50% off!!  at 3pm -- naïve café, ÉCOLE",
    "日本語のキャプション and an emoji 🎈 beside it",
    "comic-book style, dynamic lighting, " * 12,  # past the 77-token window
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_planning_tokenizer_matches_the_pipelines(prompt, shared_home):
    planning, clip = PromptTokenizer(shared_home), load_clip_tokenizer(shared_home)
    tokens = planning.tokenize(prompt)
    assert tokens == clip.tokenize(prompt)
    assert planning.convert_tokens_to_ids(tokens) == clip.convert_tokens_to_ids(tokens)
