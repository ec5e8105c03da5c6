"""The real loading path at full size: SD1.5 and SDXL checkpoints as users download them, random weights.

Each family's file (tests/full_size.py writes it) is registered with `storyd weights add` against a
lock pinned to it, then drawn with `render_comic`, which loads it as a user's file is loaded
(storyd.render.pipelines._load_locked -> from_single_file with the shipped config): two reference
panels in write mode and one long-prompted panel in read mode, one step at a small size. The checks
are what goes wrong on day one: keys the loader skips or misplaces, dtypes, which layers CSA
patches, bank sizes against `storyd validate`'s estimate, the text encoders' token limits.

Slow (SD1.5 about 2 minutes, SDXL 5, 7 GB of temporary disk; docs/benchmarks.md): `make test-full-size`.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from full_size import RecordingCheckpoint, extra_keys, file_view, write_full_size
from safetensors import safe_open

pytestmark = pytest.mark.slow

# Per family: the size drawn at, and the dtype it loads in on this CPU (SDXL in fp32 would need 14 GB).
RUNS = {"sd15": (64, "fp32"), "sdxl": (128, "bf16")}
LONG_PROMPT = "Mia " + ", ".join(["standing on a wide sandy beach under a bright summer sky"] * 8)

STORY = """\
title: Full size
seed: 7
model: {family}
size: {size}
steps: 1
consistency:
  warmup_steps: 0
  random_skip: false
characters:
  Mia: a kid with red hair in a blue shirt
panels:
  - prompt: Mia standing on the beach
  - prompt: Mia waving on the beach
  - prompt: {long}
"""


@dataclass
class Run:
    family: str
    dtype: torch.dtype
    checkpoint: Path
    layout: dict
    read: set = field(default_factory=set)  # the file keys diffusers' conversion read
    patched: set = field(default_factory=set)  # attention layers carrying storyd's CSA processor while drawing
    pipe: object = None
    validate: dict = field(default_factory=dict)  # `storyd validate --json`
    banks: dict = field(default_factory=dict)  # character -> bytes of the saved bank's tensors
    out: Path | None = None


class _WatchLayers:
    """A Progress that, at each step's end (CSA installed), notes the UNet's CSA-patched layers."""

    def __init__(self, pipes: dict, patched: set) -> None:
        self.pipes, self.patched = pipes, patched

    def update(self, *args, **kwargs):
        pass

    def end(self, task):
        pass

    def note(self, message):
        pass

    def advance(self, task, by=1):
        from storyd.csa.processor import ConsistentSelfAttnProcessor2_0

        for pipe in self.pipes.values():
            procs = pipe.unet.attn_processors
            self.patched.update(k for k, p in procs.items() if isinstance(p, ConsistentSelfAttnProcessor2_0))


def _bank_bytes(path: Path) -> int:
    with safe_open(str(path), framework="pt") as handle:
        return sum(handle.get_tensor(k).nbytes for k in handle.keys())


@contextlib.contextmanager
def _deleted_after(path: Path):
    """The multi-gigabyte file goes however the fixture ends (pytest keeps its temp dirs for a while)."""
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module", params=sorted(RUNS))
def run(request, tmp_path_factory):
    """Write, lock, register, validate and draw one family; the file is deleted afterwards."""
    import diffusers.loaders.single_file as single_file
    from support import invoke

    from storyd.comic import ComicOptions, render_comic
    from storyd.render.memory import MemorySettings, torch_dtype

    family = request.param
    size, dtype = RUNS[family]
    tmp = tmp_path_factory.mktemp(f"full-size-{family}")
    checkpoint = tmp / f"{family}.safetensors"
    with _deleted_after(checkpoint), pytest.MonkeyPatch.context() as patch:
        layout, sha = write_full_size(family, checkpoint)
        lock = json.loads((Path(__file__).parent.parent / "weights.lock").read_text())
        lock["models"][family]["files"][0].update(size=checkpoint.stat().st_size, sha256=sha)
        (tmp / "weights.lock").write_text(json.dumps(lock))
        patch.setenv("STORYD_WEIGHTS_LOCK", str(tmp / "weights.lock"))
        patch.setenv("STORYD_HOME", str(tmp / "home"))
        patch.setenv("STORYD_WEIGHTS_DIR", str(tmp / "weights"))
        result = invoke(["weights", "add", family, checkpoint])
        assert result.exit_code == 0, result.output

        story = tmp / "story.yaml"
        story.write_text(STORY.format(family=family, size=size, long=LONG_PROMPT))
        result = invoke(["validate", story, "--device", "cpu", "--json", "--dtype", dtype])
        assert result.exit_code == 0, result.output

        run = Run(family, torch_dtype(dtype), checkpoint, layout, validate=json.loads(result.stdout))
        real = single_file.load_single_file_checkpoint
        patch.setattr(single_file, "load_single_file_checkpoint",
                      lambda *a, **k: RecordingCheckpoint(real(*a, **k), run.read))
        pipes: dict = {}
        run.out = tmp / "comic"
        render_comic(story, ComicOptions(out_dir=run.out, device="cpu", memory=MemorySettings(dtype=dtype),
                                         save_characters=tmp / "banks"),
                     progress=_WatchLayers(pipes, run.patched), pipes=pipes)
        (run.pipe,) = pipes.values()
        run.banks = {p.stem: _bank_bytes(p) for p in (tmp / "banks").glob("*.safetensors")}
        yield run


def test_every_model_key_in_the_file_is_read(run):
    """The file holds the models' keys and the training leftovers, nothing else, and diffusers' conversion
    reads every model key (where each one lands is the next test)."""
    with safe_open(str(run.checkpoint), framework="pt") as handle:
        written = set(handle.keys())
    model_keys = {source.key for sources in run.layout.values() for source in sources.values()}
    assert written == model_keys | set(extra_keys(run.family))
    assert model_keys - run.read == set()


def test_every_loaded_tensor_is_the_one_written_for_it(run):
    """Tensor for tensor: random values make a misplaced, transposed or mis-sliced tensor show."""
    with safe_open(str(run.checkpoint), framework="pt") as handle:
        for component, sources in run.layout.items():
            state = getattr(run.pipe, component).state_dict()
            assert set(state) == set(sources), component
            for name, tensor in state.items():
                assert tensor.dtype == run.dtype, f"{component}.{name}: {tensor.dtype}"
                expected = file_view(handle.get_tensor(sources[name].key), sources[name]).to(run.dtype)
                assert torch.equal(tensor, expected), f"{component}.{name}"


def test_csa_patches_the_up_layers_the_plan_counts(run):
    """The published layer set (`up`): every self-attention of every up block's transformers, by name."""
    from storyd.plan.estimate import attention_layout

    config = run.pipe.unet.config
    depths = config.transformer_layers_per_block
    depths = [depths] * len(config.up_block_types) if isinstance(depths, int) else depths[::-1]
    expected = {
        f"up_blocks.{j}.attentions.{a}.transformer_blocks.{t}.attn1.processor"
        for j, kind in enumerate(config.up_block_types) if "CrossAttn" in kind
        for a in range(config.layers_per_block + 1)
        for t in range(depths[j])
    }
    planned = sum(count for block, _, _, count in attention_layout(dict(config)) if block == "up")
    assert run.patched == expected
    assert len(expected) == planned == {"sd15": 9, "sdxl": 36}[run.family]


def test_banks_are_the_size_validate_estimates(run):
    assert run.banks and sum(run.banks.values()) == run.validate["estimate"]["bank_bytes"]


def test_text_encoders_read_77_tokens_and_long_prompts_in_chunks(run):
    from storyd.render.prompt_encoding import prompt_arguments

    pipe = run.pipe
    encoders = [(pipe.tokenizer, pipe.text_encoder)]
    if run.family == "sdxl":
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
    for tokenizer, encoder in encoders:
        assert tokenizer.model_max_length == encoder.config.max_position_embeddings == 77
    long_panel = run.validate["panels"][2]
    assert long_panel["chunks"] == 2, long_panel
    with torch.inference_mode():
        args = prompt_arguments(pipe, [LONG_PROMPT], [""])
    width = sum(encoder.config.hidden_size for _, encoder in encoders)
    assert args["prompt_embeds"].shape == (1, 2 * 77, width)
    assert args["negative_prompt_embeds"].shape == (1, 2 * 77, width)
    if run.family == "sdxl":
        assert args["pooled_prompt_embeds"].shape == (1, pipe.text_encoder_2.config.projection_dim)


def test_the_comic_is_drawn(run):
    manifest = json.loads((run.out / "manifest.json").read_text())
    assert len(manifest["panels"]) == 3
