"""Prompts past the text encoder's window, and weighted prompts, encoded the way SD users expect.

`compel` does the encoding: the tokens are cut into 75-token chunks, each read by the CLIP
text encoder between its own start and end tokens, and the chunks' embeddings are joined,
so the UNet's cross-attention sees every word; a fragment's weight scales its token
embeddings (above 1) or blends toward the prompt without it (below 1). The syntax is
A1111's (storyd.story.weighting), parsed here and handed to compel as weighted fragments, so
compel's own syntax (`word++`, `.blend()`) never touches story text.

SD1.5 and SD2.1 read the last hidden state, normalised; SDXL joins both encoders' penultimate
hidden states and takes its pooled embedding from the second encoder's first window, as
diffusers does. A batch whose prompts all fit one window unweighted goes to the pipeline as
text, exactly as before.
"""

from __future__ import annotations

import torch

from storyd.story.prompts import CHUNK_TOKENS
from storyd.story.weighting import is_weighted, plain_text, weighted_fragments


def needs_embeddings(tokenizer, texts: list[str]) -> bool:
    """Whether any text is weighted or longer than one window, so the pipeline cannot read it as text."""
    return any(is_weighted(t) or len(tokenizer.tokenize(plain_text(t))) > CHUNK_TOKENS for t in texts)


def prompt_arguments(pipe, prompts: list[str], negatives: list[str] | None) -> dict:
    """The pipeline's text arguments for a batch: `prompt`/`negative_prompt` where the text fits,
    else the embeddings (padded to one length across the batch) that stand for them."""
    texts = prompts + (negatives or [])
    if not needs_embeddings(pipe.tokenizer, texts):
        return {"prompt": prompts, "negative_prompt": negatives}
    encoder = ChunkedEncoder(pipe)
    embeds = encoder.pad([encoder.encode(t) for t in texts])
    n = len(prompts)
    args = {"prompt_embeds": torch.cat(embeds[:n])}
    if negatives is not None:
        args["negative_prompt_embeds"] = torch.cat(embeds[n:])
    if encoder.pooled:
        pooled = [encoder.pooled_embedding(t) for t in texts]
        args["pooled_prompt_embeds"] = torch.cat(pooled[:n])
        if negatives is not None:
            args["negative_pooled_prompt_embeds"] = torch.cat(pooled[n:])
    return args


class ChunkedEncoder:
    """One pipeline's text encoders (one, or SDXL's two) behind compel's chunked, weighted encoding."""

    def __init__(self, pipe) -> None:
        from compel import EmbeddingsProvider, ReturnedEmbeddingsType, SplitLongTextMode

        pairs = [(pipe.tokenizer, pipe.text_encoder)]
        self.pooled = getattr(pipe, "text_encoder_2", None) is not None
        if self.pooled:
            pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        kind = (
            ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
            if self.pooled
            else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED
        )
        self.device = pipe._execution_device
        # BRUTAL: exact 75-token windows, so the plan's chunk count (PanelPrompt.chunks) is what the model reads.
        self.providers = [
            EmbeddingsProvider(
                tokenizer,
                encoder,
                truncate=False,
                returned_embeddings_type=kind,
                split_long_text_mode=SplitLongTextMode.BRUTAL,
                device=self.device,
            )
            for tokenizer, encoder in pairs
        ]

    def encode(self, text: str) -> torch.Tensor:
        """(1, 77 * chunks, D): the text's embeddings, every chunk's, weights applied."""
        fragments = weighted_fragments(text) or [("", 1.0)]
        words, weights = [f for f, _ in fragments], [w for _, w in fragments]
        parts = [
            p.get_embeddings_for_weighted_prompt_fragments([words], [weights], device=self.device)
            for p in self.providers
        ]
        return torch.cat(parts, dim=-1)

    def pooled_embedding(self, text: str) -> torch.Tensor:
        """SDXL's pooled text embedding: the second encoder's, over the first window of the plain text."""
        return self.providers[-1].get_pooled_embeddings([plain_text(text)], device=self.device)

    def pad(self, embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every embedding padded with empty-prompt chunks to the longest's length."""
        longest = max(e.shape[1] for e in embeds)
        empty = torch.cat([p.empty_z.to(embeds[0]) for p in self.providers], dim=-1)
        return [torch.cat([e, *[empty] * ((longest - e.shape[1]) // empty.shape[1])], dim=1) for e in embeds]
