"""Consistent Self-Attention on small UNets of the SD1.5, SD2.1 and SDXL shapes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from storyd.csa.processor import OFF, READ, WRITE, ConsistencyState, consistent_attention, self_attention_layers
from storyd.render.tiny_models import build_unet
from storyd.story.model import ConsistencySettings

FAMILIES = ("sd15", "sd21", "sdxl")
ALWAYS = ConsistencySettings(sampling_rate=(1.0,), warmup_steps=0, random_skip=False)


@pytest.fixture(scope="module", params=FAMILIES)
def unet(request):
    return build_unet(request.param).eval()


def run(unet, latents, text=None, seed=0):
    """One UNet forward on `latents` (B, 4, 16, 16) with fixed text conditioning."""
    batch = latents.shape[0]
    g = torch.Generator().manual_seed(seed)
    if text is None:
        text = torch.randn(1, 8, unet.config.cross_attention_dim, generator=g).expand(batch, -1, -1)
    kwargs = {}
    if unet.config.addition_embed_type == "text_time":
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(batch, 32), "time_ids": torch.zeros(batch, 6)}
    with torch.no_grad():
        return unet(latents, 500, encoder_hidden_states=text, **kwargs).sample


def noise(n, seed):
    return torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_default_layers_are_the_up_blocks_self_attention(unet):
    with consistent_attention(unet, ConsistencyState(ConsistencySettings(), seed=0)) as chosen:
        patched = {k for k, v in unet.attn_processors.items() if type(v).__name__ == "ConsistentSelfAttnProcessor2_0"}
    assert patched == {layer.name for layer in chosen}
    assert patched and all(name.startswith("up_blocks") and "attn1" in name for name in patched)
    assert all(type(v).__name__ == "AttnProcessor2_0" for v in unet.attn_processors.values())  # restored


def test_layer_sets_select_by_block_and_level(unet):
    layers = self_attention_layers(unet)
    levels = sorted({layer.level for layer in layers})
    assert levels == list(range(len(levels))) and len(levels) >= 2
    for layer_set, expect in [
        ("all", layers),
        ("mid", [la for la in layers if la.block == "mid"]),
        ("levels:0", [la for la in layers if la.level == 0]),
    ]:
        with consistent_attention(unet, ConsistencyState(ConsistencySettings(), seed=0), layer_set) as chosen:
            assert [c.name for c in chosen] == [e.name for e in expect]


@pytest.mark.parametrize(
    "settings", [ConsistencySettings(enabled=False), dataclasses.replace(ALWAYS, sampling_rate=(0.0,))]
)
def test_off_or_rate_zero_gives_the_stock_output(unet, settings):
    latents = noise(2, 1)
    stock = run(unet, latents)
    state = ConsistencyState(settings, seed=0)
    with consistent_attention(unet, state, "all"):
        state.begin_batch(OFF if not settings.enabled else WRITE, [("A",), ("A",)], cfg=False)
        patched = run(unet, latents)
    torch.testing.assert_close(patched, stock, rtol=1e-4, atol=1e-5)


def test_write_mode_shares_tokens_between_reference_images(unet):
    a, b, b2 = noise(1, 1), noise(1, 2), noise(1, 3)
    state = ConsistencyState(ALWAYS, seed=0)
    with consistent_attention(unet, state, "all"):
        state.begin_batch(WRITE, [("A",), ("A",)], cfg=False)
        first = run(unet, torch.cat([a, b]))[0]
        second = run(unet, torch.cat([a, b2]))[0]
        state.begin_batch(OFF, [(), ()], cfg=False)
        plain_first, plain_second = run(unet, torch.cat([a, b]))[0], run(unet, torch.cat([a, b2]))[0]
    assert (first - second).abs().max() > 1e-3  # image 0 sees image 1's tokens
    torch.testing.assert_close(plain_first, plain_second, rtol=1e-4, atol=1e-5)  # without CSA it does not


def test_read_mode_depends_on_the_bank_not_on_the_batch(unet):
    state = ConsistencyState(ALWAYS, seed=0)
    with consistent_attention(unet, state, "all"):
        state.begin_batch(WRITE, [("A",), ("A",)], cfg=False)
        run(unet, noise(2, 10))
        state.begin_batch(READ, [("A",), ("A",)], cfg=False)
        with_b = run(unet, torch.cat([noise(1, 1), noise(1, 2)]))[0]
        state.begin_batch(READ, [("A",), ()], cfg=False)
        with_c = run(unet, torch.cat([noise(1, 1), noise(1, 3)]))[0]
        state.begin_batch(WRITE, [("A",), ("A",)], cfg=False)
        run(unet, noise(2, 11))  # another bank for A
        state.begin_batch(READ, [("A",), ("A",)], cfg=False)
        other_bank = run(unet, torch.cat([noise(1, 1), noise(1, 2)]))[0]
    torch.testing.assert_close(with_b, with_c, rtol=1e-4, atol=1e-5)
    assert (with_b - other_bank).abs().max() > 1e-3


def test_read_step_last_reads_the_references_last_step_at_every_step(unet):
    writer = ConsistencyState(ALWAYS, seed=0)
    with consistent_attention(unet, writer, "all"):
        writer.begin_batch(WRITE, [("A",), ("A",)], cfg=False)
        run(unet, noise(2, 10))
        writer.begin_step(1)
        run(unet, noise(2, 11))
    panel = noise(1, 1)
    outputs = {}
    for read_step, step in (("same", 0), ("same", 1), ("last", 0)):
        state = ConsistencyState(dataclasses.replace(ALWAYS, read_step=read_step), seed=0, bank=writer.bank)
        with consistent_attention(unet, state, "all"):
            state.begin_batch(READ, [("A",)], cfg=False)
            state.begin_step(step)
            outputs[read_step, step] = run(unet, panel)
    torch.testing.assert_close(outputs["last", 0], outputs["same", 1], rtol=1e-4, atol=1e-5)
    assert (outputs["last", 0] - outputs["same", 0]).abs().max() > 1e-3


def test_a_bank_read_at_the_last_step_keeps_only_that_step(unet):
    every, last = (ConsistencyState(dataclasses.replace(ALWAYS, read_step=r), seed=0) for r in ("same", "last"))
    for state in (every, last):
        with consistent_attention(unet, state, "all") as chosen:
            state.begin_batch(WRITE, [("A",), ("A",)], cfg=False)
            for step in range(3):
                state.begin_step(step)
                run(unet, noise(2, 10 + step))
    assert {s for _, s in every.bank.entries["A"]} == {0, 1, 2}
    assert set(last.bank.entries["A"]) == {(layer.name, 2) for layer in chosen}
    assert last.bank.nbytes() * 3 == every.bank.nbytes()
    for key, tensor in last.bank.entries["A"].items():
        torch.testing.assert_close(tensor, every.bank.entries["A"][key])


def test_guidance_halves_never_mix(unet):
    state = ConsistencyState(ALWAYS, seed=0)
    uncond, cond = noise(2, 1), noise(2, 2)
    changed_uncond = uncond.clone()
    changed_uncond[1] = noise(1, 9)[0]
    with consistent_attention(unet, state, "all"):
        state.begin_batch(WRITE, [("A",), ("A",)], cfg=True)
        out = run(unet, torch.cat([uncond, cond]))
        out_changed = run(unet, torch.cat([changed_uncond, cond]))
        state.begin_batch(READ, [("A",)], cfg=True)
        read = run(unet, torch.cat([noise(1, 5), noise(1, 6)]))
    torch.testing.assert_close(out[2:], out_changed[2:], rtol=1e-4, atol=1e-5)  # conditional half unchanged
    assert (out[0] - out_changed[0]).abs().max() > 1e-3  # the unconditional half did share
    assert read.shape[0] == 2


def test_without_uncond_reads_only_the_conditional_half_reads_the_bank(unet):
    writer = ConsistencyState(ALWAYS, seed=0)
    with consistent_attention(unet, writer, "all"):
        writer.begin_batch(WRITE, [("A",), ("A",)], cfg=True)
        run(unet, noise(4, 1))
    panel = torch.cat([noise(1, 5), noise(1, 6)])  # unconditional, conditional
    outputs = {}
    for uncond_reads in (True, False):
        state = ConsistencyState(dataclasses.replace(ALWAYS, uncond_reads=uncond_reads), seed=0, bank=writer.bank)
        with consistent_attention(unet, state, "all"):
            state.begin_batch(READ, [("A",)], cfg=True)
            outputs[uncond_reads] = run(unet, panel)
    stock = run(unet, panel)
    torch.testing.assert_close(outputs[False][0], stock[0], rtol=1e-4, atol=1e-5)  # read nothing
    torch.testing.assert_close(outputs[False][1], outputs[True][1], rtol=1e-4, atol=1e-5)  # read as before
    assert (outputs[True][0] - stock[0]).abs().max() > 1e-3


def test_without_guidance_one_half_works_and_a_guided_bank_serves_it(unet):
    state = ConsistencyState(ALWAYS, seed=0)
    with consistent_attention(unet, state, "all"):
        state.begin_batch(WRITE, [("A",), ("A",)], cfg=True)
        run(unet, noise(4, 1))
        state.begin_batch(READ, [("A",)], cfg=False)
        out = run(unet, noise(1, 2))
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


def test_same_seed_same_sampling_and_skips(unet):
    settings = ConsistencySettings(sampling_rate=(0.5,), warmup_steps=0, random_skip=True)
    outs = []
    for _ in range(2):
        state = ConsistencyState(settings, seed=42)
        with consistent_attention(unet, state, "all"):
            state.begin_batch(WRITE, [("A",), ("A",)], cfg=False)
            outs.append(run(unet, noise(2, 1)))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    state = ConsistencyState(settings, seed=43)
    with consistent_attention(unet, state, "all"):
        state.begin_batch(WRITE, [("A",), ("A",)], cfg=False)
        assert (run(unet, noise(2, 1)) - outs[0]).abs().max() > 1e-4


def test_warmup_and_skip_schedule():
    state = ConsistencyState(
        ConsistencySettings(warmup_steps=2, skip_early=0.3, skip_late=0.1, skip_switch_step=20), seed=1, n_layers=200
    )
    state.mode = WRITE
    layers = [type("L", (), {"index": i})() for i in range(200)]
    state.begin_step(1)
    assert not any(state.applies(la) for la in layers)
    state.begin_step(5)
    early = sum(state.applies(la) for la in layers) / 200
    state.begin_step(25)
    late = sum(state.applies(la) for la in layers) / 200
    assert 0.55 < early < 0.85 and 0.8 < late < 0.98


def test_a_written_image_attends_over_itself_and_the_other_references_sampled_tokens():
    """The write step against CSA's definition, image by image: keys and values are the image's own tokens
    followed by every other reference's sampled tokens, projected as one context (storyd projects each
    image once and gathers the projections)."""
    from diffusers.models.attention_processor import Attention

    from storyd.csa.processor import ConsistentSelfAttnProcessor2_0, LayerInfo, attend_with

    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=2, dim_head=16).eval()
    layer = LayerInfo("up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor", "up", 1, 0)
    state = ConsistencyState(dataclasses.replace(ALWAYS, sampling_rate=(0.5,)), seed=3)
    state.begin_batch(WRITE, [("A",), ("B",), ("A",), ("A",)], cfg=True)  # A's three references and one of B
    x = torch.randn(2 * 4, 24, 32)
    with torch.no_grad():
        out = ConsistentSelfAttnProcessor2_0(state, layer)(attn, x).view(2, 4, 24, 32)
        halves = x.view(2, 4, 24, 32)
        idx = state.sample_indices(layer, 24, 3, "A")  # drawn once per step and level: the ones the write used
        assert idx.shape == (3, 12)
        members = [0, 2, 3]
        for half in range(2):
            for image in members:
                others = torch.cat([halves[half, j][idx[k]] for k, j in enumerate(members) if j != image])
                expected = attend_with(attn, halves[half, image][None], others[None])[0]
                torch.testing.assert_close(out[half, image], expected, rtol=1e-5, atol=1e-5)
            alone = attend_with(attn, halves[half, 1][None], halves[half, 1][None, :0])[0]  # B has no other reference
            torch.testing.assert_close(out[half, 1], alone, rtol=1e-5, atol=1e-5)
