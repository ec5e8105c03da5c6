"""The single-file layout tests/full_size.py writes, checked in seconds on the meta device.

diffusers' own conversion functions (the ones `from_single_file` calls) run over a checkpoint of
meta tensors in that layout: they must read every model key and rebuild exactly the state dicts
the shipped configs' models have, shape for shape. The slow tests (test_full_size.py) then load
real files through storyd; this keeps the layout and diffusers' reading of it in `make test`.
"""

from __future__ import annotations

import json

import pytest
import torch
from full_size import (
    CONFIGS,
    PUBLISHED_PARAMS,
    RecordingCheckpoint,
    checkpoint_layout,
    checkpoint_tensors,
    count_params,
    extra_keys,
    meta_components,
)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def family(request):
    return request.param


def test_the_shipped_configs_build_the_published_models(family):
    assert count_params(meta_components(family)) == PUBLISHED_PARAMS[family]


def test_diffusers_reads_every_model_key_back_into_place(family):
    from diffusers.loaders import single_file_utils as convert
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    components = meta_components(family)
    layout = checkpoint_layout(family, components)
    read: set[str] = set()
    checkpoint = RecordingCheckpoint({k: torch.empty(shape, dtype=dtype, device="meta")
                                      for k, (shape, dtype) in checkpoint_tensors(family, layout).items()}, read)
    folder = CONFIGS / family
    assert convert.infer_diffusers_model_type(checkpoint) == {"sd15": "v1", "sdxl": "xl_base"}[family]
    clip = convert.convert_ldm_clip_checkpoint(checkpoint)
    converted = {
        "unet": convert.convert_ldm_unet_checkpoint(checkpoint, json.loads((folder / "unet/config.json").read_text())),
        "vae": convert.convert_ldm_vae_checkpoint(checkpoint, json.loads((folder / "vae/config.json").read_text())),
        # transformers' CLIPTextModel has no `text_model.` level any more; diffusers strips it
        "text_encoder": {k.removeprefix("text_model."): v for k, v in clip.items()},
    }
    if family == "sdxl":
        with torch.device("meta"):
            model = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
        converted["text_encoder_2"] = convert.convert_open_clip_checkpoint(
            model, checkpoint, prefix="conditioner.embedders.1.model.")
    for component, state in converted.items():
        # CLIP's position ids are read and dropped: transformers rebuilds them (a non-persistent buffer now)
        got = {k: tuple(v.shape) for k, v in state.items() if k != "embeddings.position_ids"}
        assert got == components[component], component
    model_keys = {s.key for sources in layout.values() for s in sources.values()}
    assert model_keys <= read
    assert set(checkpoint) - read <= set(extra_keys(family))
