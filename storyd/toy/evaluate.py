"""Measure how well a trained toy model follows its prompts, read back by the attribute reader.

``python -m storyd.toy.evaluate MODEL_DIR [COUNT] [GUIDANCE] [--record]`` prints the per-attribute
adherence and writes a contact sheet of the generated images to the temp folder; ``--record``
also stores the result in the model's ``model.json`` under ``adherence``.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import torch

from storyd.toy.captions import describe
from storyd.toy.metrics import prompt_adherence
from storyd.toy.world import SETTINGS, random_look


def adherence_prompts(count: int, seed: int) -> list[tuple[str, dict]]:
    """Single-character prompts naming setting, shirt colour and action (and sometimes hair colour)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        look = random_look(rng)
        setting = rng.choice(tuple(SETTINGS))
        action = rng.choice(("standing", "waving", "running", "sitting", "jumping"))
        attrs = ["shirt_colour"] + (["hair_colour"] if i % 2 else [])
        text = f"{describe(look, attrs)} {action} {SETTINGS[setting]}"
        named = {"setting": setting, "action": action, **{a: getattr(look, a) for a in attrs}}
        out.append((text, named))
    return out


def generate(pipe, prompts: list[str], *, seed: int, steps: int, guidance: float, batch: int = 10) -> list:
    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        images += pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                       generator=gens).images
    return images


def contact_sheet(images: list, columns: int = 10):
    from PIL import Image

    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * 66, rows * 66), (255, 255, 255))
    for k, im in enumerate(images):
        sheet.paste(im, ((k % columns) * 66, (k // columns) * 66))
    return sheet


def main() -> None:
    import sys

    from storyd.render.pipelines import load_folder_pipeline
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.toy.reader import AttributeReader
    from storyd.weights.paths import storyd_home

    args = [a for a in sys.argv[1:] if a != "--record"]
    folder = Path(args[0])
    info = json.loads((folder / "model.json").read_text())
    count = int(args[1]) if len(args) > 1 else 50
    guidance = float(args[2]) if len(args) > 2 else info["guidance"]
    pipe = load_folder_pipeline(folder, load_clip_tokenizer(storyd_home()))
    prompts = adherence_prompts(count, seed=2024)
    images = generate(pipe, [p for p, _ in prompts], seed=7, steps=info["steps"], guidance=guidance)
    scores = prompt_adherence(images, [n for _, n in prompts], reader=AttributeReader.load())
    contact_sheet(images).save(Path(tempfile.gettempdir()) / f"toy-adherence-g{guidance:g}.png")
    result = {"guidance": guidance, "steps": info["steps"], "prompts": count, "prompt_seed": 2024, **scores}
    if "--record" in sys.argv:
        info.setdefault("adherence", {})[f"guidance_{guidance:g}"] = result
        (folder / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
