"""Teach the toy text encoder the world's language before the UNet is trained on it.

Stable Diffusion freezes a CLIP text encoder that already knows what "a red shirt"
means; a text encoder trained from nothing through the diffusion loss alone learns
it far too slowly on two cores (a first toy model drew the same kid whatever shirt
colour was asked). So the toy encoder first learns to read every caption back into
the attributes it names, with one linear head per attribute on top of the positions
that see the whole caption (the first end token and the last padding token), and is
then frozen. The heads are thrown away; only the encoder is kept.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from storyd.progress import Progress
from storyd.toy.captions import choose_named, write_caption
from storyd.toy.world import ACTIONS, LOOK_ATTRS, LOOK_CHOICES, SETTINGS, Scene

FIGURE_SLOTS = 2
# (head name, its values); class 0 of every head means "the caption does not say".
HEADS: tuple[tuple[str, tuple], ...] = (
    ("setting", tuple(SETTINGS)),
    ("figures", (1, 2)),
    *((f"{slot}.{attr}", LOOK_CHOICES[attr]) for slot in range(FIGURE_SLOTS) for attr in LOOK_ATTRS),
    *((f"{slot}.action", ACTIONS) for slot in range(FIGURE_SLOTS)),
)


def caption_labels(scene: Scene, named: dict | None) -> list[int]:
    """Per head, 1 + the index of the value the caption names, or 0; ``named=None`` is the empty caption."""
    if named is None:
        return [0] * len(HEADS)
    said: dict[str, object] = {"figures": len(scene.figures)}
    if named["setting"]:
        said["setting"] = scene.setting
    for slot, (fig, n) in enumerate(zip(scene.figures, named["figures"])):
        for attr in n["attrs"]:
            said[f"{slot}.{attr}"] = getattr(fig.look, attr)
        if n["action"]:
            said[f"{slot}.action"] = fig.action
    return [values.index(said[name]) + 1 if name in said else 0 for name, values in HEADS]


class AttributeHeads(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.sizes = [len(values) + 1 for _, values in HEADS]
        self.linear = torch.nn.Linear(width, sum(self.sizes))

    def loss_and_accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Mean cross-entropy over heads, and the fraction of captions read back with every head right."""
        logits = self.linear(features).split(self.sizes, dim=-1)
        loss = sum(F.cross_entropy(lg, labels[:, i]) for i, lg in enumerate(logits)) / len(logits)
        right = torch.stack([lg.argmax(-1) == labels[:, i] for i, lg in enumerate(logits)], dim=1).all(dim=1)
        return loss, right.float().mean().item()


def summary_features(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    """The hidden states that have seen the whole caption: the first end token and the last position."""
    out = text_encoder(input_ids)
    return torch.cat([out.pooler_output, out.last_hidden_state[:, -1]], dim=0)


def pretrain_text_encoder(text_encoder, tokenize: Callable[[list[str]], torch.Tensor], scenes: Sequence[Scene], *,
                          seed: int, steps: int, batch: int, lr: float, empty_prob: float,
                          progress: Progress | None = None) -> float:
    """Train ``text_encoder`` to read captions of ``scenes`` back; return the all-heads accuracy of the
    last 20 steps. Deterministic from ``seed``. ``progress`` follows task "text", its loss as the detail."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = AttributeHeads(text_encoder.config.hidden_size)
    device = next(text_encoder.parameters()).device
    heads.to(device)
    params = list(text_encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    text_encoder.train()
    recent: list[float] = []
    for step in range(steps):
        rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
        chosen = [scenes[rng.randrange(len(scenes))] for _ in range(batch)]
        nameds = [None if rng.random() < empty_prob else choose_named(s, rng) for s in chosen]
        texts = ["" if n is None else write_caption(s, n) for s, n in zip(chosen, nameds)]
        labels = torch.tensor([caption_labels(s, n) for s, n in zip(chosen, nameds)]).to(device)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * (1 - step / steps)
        features = summary_features(text_encoder, tokenize(texts).to(device))
        loss, accuracy = heads.loss_and_accuracy(features, labels.repeat(2, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        recent = (recent + [accuracy])[-20:]
        if progress:
            progress.update("text", step + 1, steps, unit="steps", detail=f"loss {loss.item():.4f}")
    text_encoder.eval()
    return sum(recent) / max(1, len(recent))
