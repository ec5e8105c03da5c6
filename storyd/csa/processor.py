"""Consistent Self-Attention (CSA): the attention processor and the state it reads.

For each image, queries are its own tokens; keys and values are its own tokens plus
a random subset of the tokens of the reference images of the characters it shows.
In *write* mode a character's reference panels are drawn together and see each
other's sampled tokens, and those tokens go into the character bank; in *read* mode
a panel sees the bank of each character it shows, at its own step or (``read_step:
last``) at the references' last step. The classifier-free-guidance
halves never mix.

All state lives in `ConsistencyState`, owned by the generator and handed to each
processor. The step advances from the pipeline's step-end callback, so a scheduler
that calls the UNet twice per step (Heun) still sees one step.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from storyd.csa.bank import CharacterBank
from storyd.plan.seeds import derive_seed
from storyd.story.model import ConsistencySettings

OFF, WRITE, READ = "off", "write", "read"
_BLOCK_RE = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^mid_block\.")



def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from `parts` alone, for CSA's per-layer random draws."""
    return torch.Generator().manual_seed(derive_seed(*parts))


@dataclass(frozen=True)
class LayerInfo:
    name: str  # the processor key, e.g. "up_blocks.0.attentions.1.transformer_blocks.3.attn1.processor"
    block: str  # down | mid | up
    level: int  # resolution level: 0 is the coarsest level that has self-attention
    index: int  # position among the patched layers (for per-layer random draws)


@dataclass
class ConsistencyState:
    """What CSA needs to know at every layer call; owned and driven by the generator."""

    settings: ConsistencySettings
    seed: int
    bank: CharacterBank = field(default_factory=CharacterBank)
    device: torch.device | str = "cpu"
    mode: str = OFF
    step: int = 0
    cfg: bool = True  # the batch holds an unconditional and a conditional half
    image_characters: tuple[tuple[str, ...], ...] = ()  # per image of the current batch
    n_layers: int = 0  # how many layers carry CSA (set when it is installed)
    max_context_tokens: int = 0  # the most keys any CSA call used: a measure of read-mode cost
    _skips: torch.Tensor | None = None
    _indices: dict = field(default_factory=dict)
    _view: dict = field(default_factory=dict)

    def begin_batch(self, mode: str, image_characters: list[tuple[str, ...]], *, cfg: bool) -> None:
        self.bank.flush()  # a disk bank writes out the last step the batch before left it
        self.mode, self.cfg = mode, cfg
        self.image_characters = tuple(tuple(c) for c in image_characters)
        self._view = {}
        self.begin_step(0)

    def begin_step(self, step: int) -> None:
        """Draw this step's random choices and bring this step's bank to the compute device."""
        self.step = step
        self._indices.clear()
        self._skips = torch.rand(max(self.n_layers, 1), generator=generator("csa-skip", self.seed, step))
        if self.mode != READ or not self.warm:
            self._view = {}
            return
        wanted = sorted({c for chars in self.image_characters for c in chars})
        if self.settings.read_step == "same":
            self._view = self.bank.step_tensors(wanted, step, self.device)
        elif not self._view:  # "last": one view serves every step of the batch
            for character in wanted:
                last = self.bank.last_step(character)
                if last is not None:
                    self._view.update(self.bank.step_tensors([character], last, self.device))

    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """The pipeline's `callback_on_step_end`, called after every UNet evaluation.

        Second-order schedulers (Heun, KDPM2) evaluate the UNet twice per scheduler step
        and report `state_in_first_order` False in between: both evaluations are one step.
        """
        if getattr(pipe.scheduler, "state_in_first_order", True):
            self.begin_step(self.step + 1)
        return callback_kwargs

    @property
    def warm(self) -> bool:
        return self.step >= self.settings.warmup_steps

    def applies(self, layer: LayerInfo) -> bool:
        """Whether CSA runs at this layer call (warm-up over and not skipped at random)."""
        if self.mode == OFF or not self.warm:
            return False
        if not self.settings.random_skip:
            return True
        s = self.settings
        p = s.skip_early if self.step < s.skip_switch_step else s.skip_late
        return bool(self._skips[layer.index] >= p)

    def rate(self, level: int) -> float:
        rates = self.settings.sampling_rate
        return rates[min(level, len(rates) - 1)]

    def sample_indices(self, layer: LayerInfo, n_tokens: int, n_images: int, character: str) -> torch.Tensor:
        """(n_images, k) token indices, one random subset per reference image, shared by all
        layers of this level within the step; seeded by story seed, character, step and level."""
        key = (layer.level, n_tokens, n_images, character)
        if key not in self._indices:
            k = round(self.rate(layer.level) * n_tokens)
            g = generator("csa-index", self.seed, character, self.step, layer.level)
            rows = [torch.randperm(n_tokens, generator=g)[:k] for _ in range(n_images)]
            self._indices[key] = torch.stack(rows).to(self.device)
        return self._indices[key]

    def bank_tokens(self, character: str, layer: LayerInfo) -> torch.Tensor | None:
        return self._view.get((character, layer.name))


class ConsistentSelfAttnProcessor2_0:
    """A diffusers attention processor for self-attention (`attn1`) layers with CSA.

    Falls back to the stock `AttnProcessor2_0` whenever CSA does not apply, so with CSA
    off the UNet computes exactly what it computes without storyd.
    """

    def __init__(self, state: ConsistencyState, layer: LayerInfo) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.state = state
        self.layer = layer
        self.stock = AttnProcessor2_0()

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        st = self.state
        if st.mode == OFF or encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if st.mode == WRITE:
            return self._write(attn, hidden_states)
        if not st.applies(self.layer):
            return self.stock(attn, hidden_states, None, None, temb, *args, **kwargs)
        return self._read(attn, hidden_states)

    def _split(self, hidden_states: torch.Tensor) -> torch.Tensor:
        halves = 2 if self.state.cfg else 1
        batch, tokens, channels = hidden_states.shape
        n_images = len(self.state.image_characters)
        if batch != halves * n_images:
            raise RuntimeError(f"CSA expected {halves}x{n_images} images in the batch, got {batch}")
        return hidden_states.view(halves, n_images, tokens, channels)  # (halves, images, N, C)

    def _write(self, attn, hidden_states: torch.Tensor) -> torch.Tensor:
        st = self.state
        x = self._split(hidden_states)
        halves, n_images, n_tokens, channels = x.shape
        use = st.applies(self.layer)
        out = torch.empty_like(x) if use else None
        for character, members in _groups(st.image_characters).items():
            if not st.warm:
                break
            idx = st.sample_indices(self.layer, n_tokens, len(members), character[0])  # (m, k)
            flat = x[:, members].reshape(-1, n_tokens, channels)  # (halves·m, N, C)
            sampled = _sampled(flat, halves, idx)  # (halves, m, k, C)
            st.bank.write(character[0], self.layer.name, st.step, sampled.reshape(halves, -1, channels))
            if st.settings.read_step == "last":  # later panels read only the last step: keep one, not all
                st.bank.forget_before(character[0], self.layer.name, st.step)
            if not use:
                continue
            # keys and values are per token: each image is projected once, and the others' sampled rows gathered
            key, value = (torch.cat([t, _others(_sampled(t, halves, idx), halves)], dim=1)
                          for t in (attn.to_k(flat), attn.to_v(flat)))
            st.max_context_tokens = max(st.max_context_tokens, key.shape[1])
            result = attend_projected(attn, flat, attn.to_q(flat), key, value)
            out[:, members] = result.view(halves, len(members), n_tokens, channels)
        if not use:
            return self.stock(attn, hidden_states)
        return out.reshape(hidden_states.shape)

    def _read(self, attn, hidden_states: torch.Tensor) -> torch.Tensor:
        st = self.state
        x = self._split(hidden_states)
        halves, _, n_tokens, channels = x.shape
        out = torch.empty_like(x)
        for characters, members in _groups(st.image_characters).items():
            parts = [t for t in (st.bank_tokens(c, self.layer) for c in characters) if t is not None]
            if not parts:
                group = x[:, members].reshape(-1, n_tokens, channels)
                out[:, members] = self.stock(attn, group).view(halves, len(members), n_tokens, channels)
                continue
            bank = torch.cat(parts, dim=1).to(x.dtype)  # (bank halves, M, C)
            bank = bank[-halves:]  # a bank written with guidance serves a run without it: its conditional half
            first = 0
            if halves == 2 and not st.settings.uncond_reads:  # the unconditional half attends to itself only
                out[0, members] = self.stock(attn, x[0, members])
                first = 1
            readers = x[first:, members].reshape(-1, n_tokens, channels)
            extra = bank[first:, None].expand(halves - first, len(members), *bank.shape[1:])
            out[first:, members] = _attend(attn, readers, extra.reshape(-1, bank.shape[1], channels), st).view(
                halves - first, len(members), n_tokens, channels)
        return out.reshape(hidden_states.shape)


def _groups(image_characters: tuple[tuple[str, ...], ...]) -> dict[tuple[str, ...], list[int]]:
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, chars in enumerate(image_characters):
        groups.setdefault(tuple(chars), []).append(i)
    return groups


def _sampled(rows: torch.Tensor, halves: int, idx: torch.Tensor) -> torch.Tensor:
    """(halves·m, N, D) → (halves, m, k, D): image i's tokens at ``idx[i]``, in each half."""
    images = rows.view(halves, idx.shape[0], *rows.shape[1:])
    return torch.stack([images[:, i, idx[i]] for i in range(idx.shape[0])], dim=1)


def _others(sampled: torch.Tensor, halves: int) -> torch.Tensor:
    """(halves, m, k, D) → (halves·m, (m-1)k, D): each image's row gets the other images' sampled tokens."""
    m = sampled.shape[1]
    rows = [torch.cat([sampled[:, j] for j in range(m) if j != i], dim=1) if m > 1 else sampled[:, i, :0]
            for i in range(m)]
    return torch.stack(rows, dim=1).reshape(halves * m, -1, sampled.shape[-1])


def _attend(attn, x: torch.Tensor, extra: torch.Tensor, state: ConsistencyState) -> torch.Tensor:
    state.max_context_tokens = max(state.max_context_tokens, x.shape[1] + extra.shape[1])
    return attend_with(attn, x, extra)


def attend_with(attn, x: torch.Tensor, extra: torch.Tensor, extra_weight: float = 1.0) -> torch.Tensor:
    """Self-attention of x (B, N, C) whose keys and values also cover `extra` (B, M, C).

    `extra_weight` multiplies the attention each query gives the extra tokens before
    normalising (a bias of log `extra_weight` on their logits); 1 leaves them as they are.
    """
    if attn.group_norm is not None:
        x_in = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        extra = attn.group_norm(extra.transpose(1, 2)).transpose(1, 2) if extra.shape[1] else extra
    else:
        x_in = x
    context = torch.cat([x_in, extra], dim=1)  # (B, N+M, C)
    return attend_projected(attn, x, attn.to_q(x_in), attn.to_k(context), attn.to_v(context), extra_weight)


def attend_projected(attn, x: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     extra_weight: float = 1.0) -> torch.Tensor:
    """x's projected queries (B, N, C') over projected keys and values (B, N+M, C'), x's own N first; the
    heads, norms, output projection and residual as diffusers' processor does them. Projecting tokens
    one by one and gathering the projections is the same as projecting the gathered tokens: the
    transformer blocks' self-attention (``attn1``) has no group norm to mix them."""
    batch = x.shape[0]
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, N, d)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, N+M, d)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    bias = None
    if extra_weight != 1.0:
        bias = torch.zeros(1, key.shape[2], device=query.device, dtype=query.dtype)
        bias[:, x.shape[1]:] = math.log(extra_weight)
    hidden = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=0.0, is_causal=False)
    hidden = hidden.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
    hidden = attn.to_out[1](attn.to_out[0](hidden))
    if attn.residual_connection:
        hidden = hidden + x
    return hidden / attn.rescale_output_factor


def self_attention_layers(unet) -> list[LayerInfo]:
    """Every transformer self-attention layer of a UNet, with its block and resolution level
    (a motion UNet's temporal attention, in its ``motion_modules``, is not one)."""
    n_blocks = len(unet.config.block_out_channels)
    found: list[tuple[str, str, int]] = []
    for name in unet.attn_processors:
        if not name.endswith("attn1.processor") or "transformer_blocks" not in name or "motion_modules" in name:
            continue
        match = _BLOCK_RE.match(name)
        if match is None:
            continue
        if name.startswith("mid_block"):
            block, factor = "mid", n_blocks - 1
        elif match.group(1) == "down_blocks":
            block, factor = "down", int(match.group(2))
        else:
            block, factor = "up", n_blocks - 1 - int(match.group(2))
        found.append((name, block, factor))
    factors = sorted({f for _, _, f in found}, reverse=True)  # coarsest first
    return [LayerInfo(name, block, factors.index(f), i) for i, (name, block, f) in enumerate(found)]


def select_layers(layers: list[LayerInfo], layer_set: str) -> list[LayerInfo]:
    """`up` (published default), `down`, `mid`, `all`, or `levels:0,1` (by resolution level)."""
    if layer_set == "all":
        chosen = layers
    elif layer_set in ("up", "down", "mid"):
        chosen = [layer for layer in layers if layer.block == layer_set]
    elif layer_set.startswith("levels:"):
        levels = {int(v) for v in layer_set.split(":", 1)[1].split(",")}
        chosen = [layer for layer in layers if layer.level in levels]
    else:
        raise ValueError(f"unknown layer set {layer_set!r}")
    return [LayerInfo(layer.name, layer.block, layer.level, i) for i, layer in enumerate(chosen)]


@contextlib.contextmanager
def self_attention_processors(unet, layer_set: str, make: Callable[[LayerInfo], object]
                              ) -> Iterator[list[LayerInfo]]:
    """``make(layer)`` as the processor of each chosen self-attention layer; every other layer keeps its
    own. The original processors come back on exit."""
    original = dict(unet.attn_processors)
    chosen = select_layers(self_attention_layers(unet), layer_set)
    unet.set_attn_processor({**original, **{layer.name: make(layer) for layer in chosen}})
    try:
        yield chosen
    finally:
        unet.set_attn_processor(dict(original))  # set_attn_processor pops from what it is given


@contextlib.contextmanager
def consistent_attention(unet, state: ConsistencyState, layer_set: str = "up") -> Iterator[list[LayerInfo]]:
    """Install CSA on the chosen self-attention layers; every other layer keeps its processor.
    The original processors come back on exit."""
    with self_attention_processors(unet, layer_set, lambda layer: ConsistentSelfAttnProcessor2_0(state, layer)) \
            as chosen:
        state.n_layers = len(chosen)
        yield chosen
