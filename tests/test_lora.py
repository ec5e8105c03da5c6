"""LoRAs (`loras:` in a story and under a character) on the small models built from configs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from storyd.comic import ComicOptions, render_comic
from storyd.errors import InputError
from storyd.fsutil import file_sha256
from storyd.plan.render_plan import plan_story
from storyd.story.loader import load_story

STORY = """
model: tiny
seed: 7
steps: 2
consistency: {{id_panels: 1}}
{story_loras}
characters:
  Mia:
    description: a kid with red hair
{mia_loras}
  Sam: a kid with black hair
panels:
  - Mia waving
  - Sam waving
  - Mia running
  - Sam running
  - Mia and Sam on a bench
  - "[NC] an empty street"
"""
MIA_PANELS, SAM_PANELS, BOTH, NOBODY = [0, 2], [1, 3], 4, 5


def make_lora(folder, family: str, seed: int = 1):
    """A diffusers-format LoRA for the tiny `family` UNet: peft on the attention projections,
    lora_B random (seeded, non-zero) so that it changes the picture."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    from storyd.render.tiny_models import build_unet

    unet = build_unet(family)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    pipeline = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    name = f"{family}-{seed}.safetensors"
    pipeline.save_lora_weights(folder, unet_lora_layers=layers, weight_name=name)
    return folder / name


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return {"ink": make_lora(folder, "sd15", 1), "pen": make_lora(folder, "sd15", 2), "xl": make_lora(folder, "sdxl")}


def story_text(story_loras: str = "", mia_loras: str = "") -> str:
    return STORY.format(story_loras=story_loras, mia_loras=mia_loras)


def draw(story, out, pipes: dict | None = None) -> list[int]:
    """Render a story file; the panels drawn, in story order."""
    return sorted(render_comic(load_story(story), ComicOptions(out_dir=out), pipes=pipes).rendered)


def panels(out) -> list[bytes]:
    return [p.read_bytes() for p in sorted((out / "panels").glob("*.png"))]


def pixels(out) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(data)), dtype=float) for data in panels(out)]


def snapshot(pipe) -> dict:
    """Everything LoRA loading could leave behind: parameters, module classes, adapters."""
    modules = {}
    for part in ("unet", "text_encoder"):
        model = getattr(pipe, part)
        modules[part] = [(n, type(m).__name__, {k: v.clone() for k, v in m.named_parameters(recurse=False)})
                         for n, m in model.named_modules()]
    return {"modules": modules, "adapters": pipe.get_list_adapters()}


def same_snapshot(a: dict, b: dict) -> bool:
    if a["adapters"] != b["adapters"]:
        return False
    for part in a["modules"]:
        for (n1, t1, p1), (n2, t2, p2) in zip(a["modules"][part], b["modules"][part], strict=True):
            if (n1, t1) != (n2, t2) or p1.keys() != p2.keys() or not all(torch.equal(p1[k], p2[k]) for k in p1):
                return False
    return True


def test_a_story_lora_changes_every_panel_weight_zero_does_not_and_the_pipeline_is_restored(
    write_story, tmp_path, loras
):
    pipes: dict = {}
    assert draw(write_story(story_text()), tmp_path / "plain", pipes) == list(range(6))
    pipe = next(iter(pipes.values()))
    before = snapshot(pipe)
    lora = f"loras:\n  - path: {loras['ink']}\n    weight: 0.8"
    draw(write_story(story_text(lora), "a.yaml"), tmp_path / "a", pipes)
    assert same_snapshot(before, snapshot(pipe))
    zero = f"loras:\n  - path: {loras['ink']}\n    weight: 0"
    draw(write_story(story_text(zero), "z.yaml"), tmp_path / "z", pipes)
    assert draw(write_story(story_text(), "b.yaml"), tmp_path / "b", pipes) == list(range(6))
    base, with_lora = panels(tmp_path / "plain"), panels(tmp_path / "a")
    assert all(x != y for x, y in zip(base, with_lora))
    assert panels(tmp_path / "z") == base == panels(tmp_path / "b")  # byte for byte: a cached pipe left as it was
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["loras"] == [
        {"character": None, "path": str(loras["ink"]), "name": None, "sha256": file_sha256(loras["ink"]), "weight": 0.8}
    ]


def test_a_character_lora_changes_only_the_panels_that_show_the_character(write_story, tmp_path, loras):
    pipes: dict = {}
    render_comic(load_story(write_story(story_text())), ComicOptions(out_dir=tmp_path / "plain"), pipes=pipes)
    mia = f"    loras:\n      - path: {loras['ink']}"
    story = load_story(write_story(story_text(mia_loras=mia), "mia.yaml"))
    plan = plan_story(story)
    for batch in plan.batches({j.index for j in plan.jobs}):  # never a Mia-LoRA panel beside one without
        assert len({plan.jobs[i].loras for i in batch.panels}) == 1
    render_comic(story, ComicOptions(out_dir=tmp_path / "mia"), pipes=pipes)
    base, mia_run = pixels(tmp_path / "plain"), pixels(tmp_path / "mia")
    change = [float(np.abs(x - y).mean()) for x, y in zip(base, mia_run)]
    # Mia's panels change by about 14 levels on average. Sam's and nobody's keep their pixels:
    # byte for byte, or, where leaving Mia's panels out of their batch lets the CPU's kernels
    # round differently, within a level (measured: 8e-5).
    assert [i for i, d in enumerate(change) if d > 0.5] == MIA_PANELS + [BOTH], change
    manifest = json.loads((tmp_path / "mia" / "manifest.json").read_text())
    assert manifest["loras"][0]["character"] == "Mia" and manifest["loras"][0]["sha256"] == file_sha256(loras["ink"])


def test_changing_a_lora_redraws_what_it_touches_and_nothing_else(write_story, tmp_path, loras):
    out = tmp_path / "out"
    ink = tmp_path / "ink.safetensors"
    ink.write_bytes(loras["ink"].read_bytes())
    path = write_story(story_text(mia_loras="    loras:\n      - path: ink.safetensors"))
    pipes: dict = {}
    draw(path, out, pipes)
    assert draw(path, out, pipes) == []
    path.write_text(path.read_text().replace("- path:", "- weight: 0.5\n        path:"))
    assert draw(path, out, pipes) == MIA_PANELS + [BOTH]
    ink.write_bytes(loras["pen"].read_bytes())  # another file at the same path: its sha256 changes
    assert draw(path, out, pipes) == MIA_PANELS + [BOTH]


def test_a_pinned_lora_is_found_through_weights_lock(write_story, tmp_path, loras, monkeypatch):
    from storyd.weights import add, load_lock

    lock, sha = json.loads(load_lock().path.read_text()), file_sha256(loras["pen"])
    lock["models"]["ink-lora"] = {
        "kind": "lora",
        "family": "sd15",
        "repo": "example/ink-lora",
        "revision": "0" * 40,
        "files": [{"path": "ink.safetensors", "size": loras["pen"].stat().st_size, "sha256": sha}],
        "license": "Apache-2.0",
    }
    lock["models"]["xl-lora"] = {**lock["models"]["ink-lora"], "family": "sdxl"}
    (tmp_path / "weights.lock").write_text(json.dumps(lock))
    monkeypatch.setenv("STORYD_WEIGHTS_LOCK", str(tmp_path / "weights.lock"))
    add(load_lock().get("ink-lora"), loras["pen"])
    story = write_story("model: tiny\nloras:\n  - name: ink-lora\n    weight: 1.5\npanels: [a kid]\n")
    render_comic(load_story(story), ComicOptions(out_dir=tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["loras"][0] == {
        "character": None, "path": None, "name": "ink-lora", "sha256": file_sha256(loras["pen"]), "weight": 1.5
    }
    with pytest.raises(InputError, match="is for sdxl models; model 'tiny' is sd15") as info:
        plan_story(load_story(write_story("model: tiny\nloras:\n  - name: xl-lora\npanels: [a kid]\n", "x.yaml")))
    assert (info.value.line, info.value.col) == (3, 5)


def test_a_lora_for_another_model_family_is_a_one_line_error_and_leaves_the_pipeline_clean(
    cli, write_story, tmp_path, loras
):
    pipes: dict = {}
    story = write_story(f"model: tiny\nloras:\n  - path: {loras['ink']}\n  - path: {loras['xl']}\npanels: [a kid]\n")
    with pytest.raises(InputError, match="is not a LoRA for model 'tiny'") as info:
        render_comic(load_story(story), ComicOptions(out_dir=tmp_path / "a"), pipes=pipes)
    assert (info.value.line, info.value.col) == (4, 5) and "\n" not in info.value.format()
    assert next(iter(pipes.values())).get_list_adapters() == {}  # the first LoRA, loaded fine, is gone too
    result = cli("comic", story, "-o", tmp_path / "b")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{story}:4:5: " in result.stderr and "is not a LoRA for model 'tiny'" in result.stderr
    xl = write_story(f"model: tiny-sdxl\nloras:\n  - path: {loras['xl']}\npanels: [a kid]\n", "xl.yaml")
    assert render_comic(load_story(xl), ComicOptions(out_dir=tmp_path / "xl")).rendered == [0]  # SDXL's pipeline


@pytest.mark.parametrize(
    "entry, message, where",
    [
        ("- path: missing.safetensors", "no LoRA file", (3, 11)),
        ("- path: notes.txt", "notes.txt is not a .safetensors file", (3, 11)),
        ("- path: broken.safetensors", "is not a readable safetensors file", (3, 11)),
        ("- path: plain.safetensors", "is not a LoRA (none of its 1 tensors", (3, 11)),
        ("- name: ink-lorra", "no LoRA named 'ink-lorra' in weights.lock", (3, 11)),
        ("- name: sdxl", "'sdxl' in weights.lock is a text-to-image model, not a LoRA", (3, 11)),
        ("- path: ink.safetensors\n    weight: heavy", "loras weight must be a number", (4, 13)),
        ("- path: ink.safetensors\n    weight: 50", "above the maximum", (4, 13)),
        ("- path: ink.safetensors\n    name: ink", "needs exactly one of 'path:' and 'name:'", (3, 5)),
        ("- ink.safetensors", "must be a mapping", (3, 5)),
        ("- path: ink.safetensors\n    wieght: 1", "did you mean 'weight'", (4, 5)),
        ("- path: ink.safetensors\n  - path: ./ink.safetensors", "appears twice in loras", (4, 5)),
    ],
)
def test_bad_loras_are_one_line_errors_at_load(write_story, tmp_path, loras, entry, message, where):
    from safetensors.torch import save_file

    (tmp_path / "ink.safetensors").write_bytes(loras["ink"].read_bytes())
    (tmp_path / "notes.txt").write_text("a LoRA, honest")
    (tmp_path / "broken.safetensors").write_bytes(b"not a header")
    save_file({"weight": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(InputError) as info:
        load_story(write_story(f"model: tiny\nloras:\n  {entry}\npanels: [a kid]\n"))
    assert message in info.value.format() and (info.value.line, info.value.col) == where
    assert info.value.hint and "\n" not in info.value.format()


def test_a_character_lora_error_names_its_line(write_story, tmp_path):
    with pytest.raises(InputError, match="no LoRA file") as info:
        load_story(write_story("characters:\n  Mia:\n    description: a kid\n    loras:\n      - path: x.safetensors\n"
                               "panels: [Mia]\n"))
    assert (info.value.line, info.value.col) == (5, 15)


def test_a_bank_drawn_under_a_lora_is_refused_without_it(write_story, tmp_path, loras):
    banks = tmp_path / "banks"
    mia = f"    loras:\n      - path: {loras['ink']}"
    render_comic(load_story(write_story(story_text(mia_loras=mia), "mia.yaml")),
                 ComicOptions(out_dir=tmp_path / "a", save_characters=banks))
    plain = load_story(write_story(story_text(), "plain.yaml"))
    with pytest.raises(InputError, match="saved bank of 'Mia'.*loras"):
        render_comic(plain, ComicOptions(out_dir=tmp_path / "b", load_characters=banks))
    render_comic(load_story(write_story(story_text(mia_loras=mia), "again.yaml")),
                 ComicOptions(out_dir=tmp_path / "c", load_characters=banks))  # the same LoRA: accepted
