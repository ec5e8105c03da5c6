"""Training the toy model: a tiny run learns, resumes exactly, and the shipped model draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from storyd.errors import InputError
from storyd.progress import NullProgress
from storyd.render.pipelines import load_folder_pipeline
from storyd.toy.model_config import ToyModelConfig
from storyd.toy.reader import AttributeReader
from storyd.toy.train import (
    TrainSettings,
    _batch,
    build_models,
    render_dataset,
    step_generator,
    step_settings,
    train,
    unet_lr,
)

ASSETS = Path(__file__).resolve().parent.parent / "storyd" / "assets" / "toy"
TINY = TrainSettings(seed=3, vae_steps=4, vae_batch=4, steps=6, batch=4, scenes=32, stories=4, story_panels=3,
                     stories_per_batch=1, copy_steps=2, copy_stories_per_batch=2, text_steps=3, text_batch=4,
                     decoder_steps=4, decoder_batch=2, checkpoint_every=3,
                     model=ToyModelConfig.tiny())


class _Stop(Exception):
    pass


def _losses(out: Path, phase: str) -> list[float]:
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["phase"] == phase]


def test_tiny_run_learns_and_exports(tmp_path, tokenizer):
    settings = TrainSettings(**{**TINY.__dict__, "vae_steps": 30, "vae_batch": 8, "steps": 30, "vae_lr": 1e-2,
                                "lr": 3e-3, "warmup": 3, "checkpoint_every": 100,
                                "copy_steps": 0, "decoder_steps": 0})
    facts = train(tmp_path, settings, tokenizer)
    vae, unet = _losses(tmp_path, "vae"), _losses(tmp_path, "unet")
    assert len(vae) == 30 and len(unet) == 30
    assert np.mean(vae[-5:]) < 0.95 * np.mean(vae[:5])
    assert np.mean(unet[-5:]) < 0.85 * np.mean(unet[:5])
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["training"]["steps"] == 30 and facts["final_loss"] == pytest.approx(np.mean(unet), abs=1e-4)
    for part in ("unet", "vae", "text_encoder"):
        assert (tmp_path / "model" / part / "config.json").exists()


class _StopAt(NullProgress):
    """A progress that stops training at one step of one phase."""

    def __init__(self, phase: str, step: int) -> None:
        self.at = (phase, step)

    def update(self, task, done, total=None, *, unit="", detail=""):
        if (task, done) == self.at:
            raise _Stop


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tokenizer):
    train(tmp_path / "straight", TINY, tokenizer)
    with pytest.raises(_Stop):
        train(tmp_path / "broken", TINY, tokenizer, progress=_StopAt("unet", 5))
    with pytest.raises(InputError, match="already holds"):
        train(tmp_path / "broken", TINY, tokenizer)
    with pytest.raises(_Stop):  # resumed at UNet step 3, broken again in the decoder phase after its checkpoint
        train(tmp_path / "broken", TINY, tokenizer, resume=True, progress=_StopAt("decoder", 4))
    assert torch.load(tmp_path / "broken" / "checkpoints" / "last.pt", weights_only=False)["phase"] == "decoder"
    train(tmp_path / "broken", TINY, tokenizer, resume=True)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "broken" / "checkpoints" / "last.pt", weights_only=False)
    for part in ("unet", "text_encoder", "vae"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    for phase in ("unet", "decoder"):
        assert _losses(tmp_path / "straight", phase) == _losses(tmp_path / "broken", phase)


def test_the_decoder_phase_trains_the_decoder_alone(tmp_path, tokenizer):
    before = TrainSettings(**{**TINY.__dict__, "decoder_steps": 0})
    after = TrainSettings(**{**TINY.__dict__, "decoder_steps": 30, "decoder_batch": 8, "decoder_lr": 1e-2})
    train(tmp_path / "before", before, tokenizer)
    facts = train(tmp_path / "after", after, tokenizer)
    a = torch.load(tmp_path / "before" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "after" / "checkpoints" / "last.pt", weights_only=False)
    assert all(torch.equal(a["vae"][k], b["vae"][k]) for k in a["vae"] if k.startswith(("encoder.", "quant_conv.")))
    assert not all(torch.equal(a["vae"][k], b["vae"][k]) for k in a["vae"] if k.startswith("decoder."))
    assert all(torch.equal(a["ema"][i], p) for i, p in enumerate(b["unet"].values()))  # the UNet is untouched
    losses = _losses(tmp_path / "after", "decoder")
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert facts["decoder_final_loss"] == pytest.approx(losses[-1], abs=1e-5)


def test_resume_with_fewer_steps_exports_the_checkpoint(tmp_path, tokenizer):
    with pytest.raises(_Stop):
        train(tmp_path, TINY, tokenizer, progress=_StopAt("unet", 4))
    facts = train(tmp_path, TrainSettings(**{**TINY.__dict__, "steps": 2, "copy_steps": 0}), tokenizer, resume=True)
    assert facts["steps"] == 3  # the checkpoint's step, not fewer
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_a_batch_holds_stories_whose_panels_read_a_nearly_finished_reference():
    scenes, _, _ = render_dataset(TINY.scenes, TINY.seed, 64, TINY.stories, TINY.story_panels)
    settings = TrainSettings(**{**TINY.__dict__, "batch": 6, "stories_per_batch": 2, "reference_t": 10})
    for step in range(5):
        batch = _batch(scenes, settings, step_generator(TINY.seed, "unet", step), 1000)
        singles = settings.batch - 2 * (settings.story_panels - 1)
        assert len(batch.idx) == settings.batch and len(batch.ref_idx) == 2
        readers = batch.idx[singles:].tolist()
        for k, ref in enumerate(batch.ref_idx.tolist()):
            assert ref >= TINY.scenes and (ref - TINY.scenes) % TINY.story_panels == 0  # a story's first panel
            mine = readers[k * 2:(k + 1) * 2]
            assert mine == [ref + 1, ref + 2]
            assert all(scenes[i].figures[0].look == scenes[ref].figures[0].look for i in mine)
            assert batch.groups[singles + 2 * k] == batch.groups[singles + 2 * k + 1] == (f"story{k}",)
        assert (batch.ref_t < 10).all()
        singles_groups = set(batch.groups[:singles])
        assert len(singles_groups) == singles and not singles_groups & {("story0",), ("story1",)}


def test_the_copy_phase_follows_with_more_stories_fewer_named_attributes_and_its_own_lr():
    s = TrainSettings()
    main, copying = step_settings(s, s.steps - 1), step_settings(s, s.steps)
    assert (main.stories_per_batch, main.story_name_prob) == (s.stories_per_batch, s.story_name_prob)
    assert (copying.stories_per_batch, copying.story_name_prob) == (s.copy_stories_per_batch, s.copy_name_prob)
    assert unet_lr(s, s.steps - 1) == pytest.approx(0.1 * s.lr, rel=1e-3)
    assert unet_lr(s, s.steps) == s.copy_lr and unet_lr(s, s.steps + s.copy_steps - 1) < 0.2 * s.copy_lr


def test_stories_must_fit_in_the_batch(tmp_path, tokenizer):
    with pytest.raises(InputError, match="do not fit"):
        train(tmp_path, TrainSettings(**{**TINY.__dict__, "stories_per_batch": 3}), tokenizer)


def test_the_unet_phase_leaves_the_pretrained_text_encoder_frozen(tmp_path, tokenizer):
    train(tmp_path / "short", TrainSettings(**{**TINY.__dict__, "steps": 2}), tokenizer)
    train(tmp_path / "long", TINY, tokenizer)
    short, long = (torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=False)["text_encoder"]
                   for run in ("short", "long"))
    untrained = build_models(TINY.model, TINY.seed)[1].state_dict()
    assert all(torch.equal(short[k], long[k]) for k in short)
    assert not all(torch.equal(short[k], untrained[k]) for k in short)


def test_resume_needs_a_checkpoint(tmp_path, tokenizer):
    with pytest.raises(InputError, match="nothing to resume"):
        train(tmp_path, TINY, tokenizer, resume=True)


def test_shipped_model_draws_through_stable_diffusion_pipeline(tokenizer):
    pipe = load_folder_pipeline(ASSETS, tokenizer)
    info = json.loads((ASSETS / "model.json").read_text())
    image = pipe("a kid in a red shirt on the beach", num_inference_steps=info["steps"],
                 guidance_scale=info["guidance"], height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    pixels = np.asarray(image)
    shuffled = np.random.default_rng(0).permutation(pixels.reshape(-1, 3)).reshape(pixels.shape)
    drawn, noise = AttributeReader.load().read([image, Image.fromarray(shuffled)])
    assert pixels.std() > 20 and drawn["setting"] == "beach" and drawn["count"] == 1  # not a flat field, a beach
    assert noise["setting"] != "beach"  # which its own colours, shuffled into noise, are not


def test_the_cli_trains_with_the_settings_defaults():
    import inspect

    from storyd.cli.train_toy import train_toy

    params = inspect.signature(train_toy).parameters
    defaults = TrainSettings()
    names = ("steps", "copy_steps", "vae_steps", "decoder_steps")
    assert [params[n].default for n in names] == [getattr(defaults, n) for n in names]
