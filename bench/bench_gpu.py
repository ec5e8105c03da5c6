"""GPU benchmark: CSA step cost and peak memory at the real sizes, the lighthouse story's peak, video s/frame.

Runs as it is on a GPU machine with no network: every model is built from a config with random
weights, whose cost in time and memory is that of the real weights (SDXL's and SD1.5's configs ship
in storyd/configs, the Wan, motion module, SparseCtrl and CLIP ViT-H configs are below, the
tokenizer is storyd's own). On CUDA, in the dtype storyd picks there (bf16 where supported):

- SDXL's UNet at 1024 px and SD1.5's at 512 px, guidance on, storyd's CSA processor installed as the
  comic installs it (`consistent_attention`) with the published settings and 4 reference panels:
  seconds per denoising step and peak device memory for stock attention (4 images, and 1), the write
  step of the 4 references, and the read step of 8 panels drawn one after another, each row after
  one more panel drawn (flat: a read panel's keys are the bank's, whatever the story's length), with
  the bank on the device; then the write and one read again with the bank in host memory. A step
  time is the mean over the steps after warm-up, random skips included, so it is what a run pays.
- The published processor, where a local clone of the official repository is named by
  STORYD_OFFICIAL_REPO; "not found" otherwise (it cannot be downloaded, and none of its code is here).
- The lighthouse story (stories/lighthouse-sdxl.yaml) drawn whole by storyd's own generator, with the
  memory options and bank placement storyd chooses: peak device memory against the official
  pipeline's 45.6 GB and vanilla SDXL's 16.0 GB (1Prompt1Story, Table 1).
- Each animate backend's denoiser at its native size: one step (with its guidance) timed, then seconds
  per frame = step x the backend's steps / frames; the interpolate backend renders its frames whole.
- storyd's whole AnimateDiff backend (SparseCtrl, per-frame IP-Adapter Plus, held ends, keyframe
  attention) rendering transitions at 512 x 512: 16 and 24 frames with keyframe attention on and off
  ("animatediff render"), then 16 with each offload mode on CUDA ("animatediff offload model" and
  "animatediff offload group"); seconds per frame and peak memory against `storyd animate --plan`.

A part that fails is a row saying why; the others still run. STORYD_BENCH_PARTS (comma-separated)
runs some parts only. On the CPU the same code runs at a reduced size (narrow models in the same
block layouts, small latents, few steps): the numbers test the code, they are not the GPU's. Peak memory there is the
process's RSS sampled during the work. The table is printed and written to STORYD_BENCH_OUT, by
default out/bench/gpu-<device>-<date>.md.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import json
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "storyd" / "configs"
LIGHTHOUSE = ROOT / "stories" / "lighthouse-sdxl.yaml"
OFFICIAL_ENV = "STORYD_OFFICIAL_REPO"
OFFICIAL_SCRIPT = "gradio_app_sdxl_specific_id_low_vram.py"  # the README's recommended script
OFFICIAL_CLASS = "SpatialAttnProcessor2_0"
PUBLISHED_GB = {"official StoryDiffusion": 45.6, "vanilla SDXL": 16.0}  # 1Prompt1Story, Table 1, SDXL 1024 px
REFERENCES = 4  # reference panels written together
READS = 8  # read panels drawn after them, one at a time
MB = 1_000_000

# The Wan 2.1 transformers as their diffusers repositories' transformer/config.json give them
# (FLF2V-14B-720P and VACE-1.3B); written from the published configs, not checked against a download here.
WAN_FULL = {
    "wan-flf2v": dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                      out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                      image_dim=1280, added_kv_proj_dim=5120, pos_embed_seq_len=2 * 257),
    "wan-vace": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                     out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                     vace_layers=list(range(0, 30, 2)), vace_in_channels=96),
}
WAN_NARROW = dict(num_attention_heads=2, attention_head_dim=8, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2)


@dataclass(frozen=True)
class Video:
    """One animate backend's denoiser run: native size, frames generated, sampler steps, text tokens."""

    width: int
    height: int
    frames: int
    steps: int
    text_tokens: int


@dataclass(frozen=True)
class Scale:
    name: str
    narrow: bool  # narrow models (the CPU); False: the real widths
    sides: dict[str, int]  # family -> panel side in px for the CSA rows
    steps: int  # denoising steps per measured batch; the first (warm-up) is not timed
    lighthouse: tuple[int, int] | None  # (side, steps) replacing the story's; None: the story as written
    video: dict[str, Video]
    interpolate_side: int
    estimate_s: dict[str, int] = field(default_factory=dict)  # part -> planned seconds, printed first


FULL = Scale(
    "full", False, {"sdxl": 1024, "sd15": 512}, steps=6, lighthouse=None,
    video={"wan-flf2v": Video(1280, 720, 81, 50, 512), "wan-vace": Video(832, 480, 81, 50, 512),
           "animatediff": Video(512, 512, 16, 25, 77)},
    interpolate_side=512,
    # measured on an H200 (2026-12-04), rounded up
    estimate_s={"csa sdxl": 30, "csa sd15": 10, "lighthouse": 40, "wan-flf2v": 60, "wan-vace": 10,
                "animatediff": 10, "animatediff render": 70,
                "animatediff offload model": 20, "animatediff offload group": 20, "interpolate": 5},
)
REDUCED = Scale(
    "reduced", True, {"sdxl": 128, "sd15": 128}, steps=3, lighthouse=(128, 3),
    video={"wan-flf2v": Video(64, 32, 9, 50, 16), "wan-vace": Video(64, 32, 9, 50, 16),
           "animatediff": Video(64, 64, 16, 25, 77)},
    interpolate_side=256,
    estimate_s={"csa sdxl": 15, "csa sd15": 10, "lighthouse": 15, "wan-flf2v": 2, "wan-vace": 2,
                "animatediff": 5, "animatediff render": 20,
                "animatediff offload model": 0, "animatediff offload group": 0, "interpolate": 2},
)
SMALLEST = dataclasses.replace(
    REDUCED, name="smallest", sides={"sdxl": 64, "sd15": 64}, steps=2, lighthouse=(64, 2),
    video={"wan-flf2v": Video(32, 32, 5, 50, 8), "wan-vace": Video(32, 32, 5, 50, 8),
           "animatediff": Video(32, 32, 8, 25, 77)},
    interpolate_side=64,
    estimate_s={"csa sdxl": 4, "csa sd15": 3, "lighthouse": 4, "wan-flf2v": 1, "wan-vace": 1,
                "animatediff": 2, "animatediff render": 5,
                "animatediff offload model": 0, "animatediff offload group": 0, "interpolate": 1},
)


# --- measuring ---------------------------------------------------------------------------------


class Peak:
    """Peak memory over a stretch of work: max allocated on CUDA; on the CPU, the process's RSS
    sampled every 2 ms (the CPU allocator keeps no peak of its own)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Peak:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            process = psutil.Process()
            self.bytes = process.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(0.002):
                    self.bytes = max(self.bytes, process.memory_info().rss)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(device: str, call) -> float:
    started = time.perf_counter()
    call()
    _sync(device)
    return time.perf_counter() - started


@contextlib.contextmanager
def building(device: str, dtype):
    """Modules made inside are made on `device` in `dtype` from the start (a 14B model made in fp32 and
    then cast would not fit), from seed 0."""
    import torch

    default = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(default)


# --- models from configs -----------------------------------------------------------------------


def _config(family: str, part: str) -> dict:
    raw = json.loads((CONFIGS / family / part / "config.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def unet_config(family: str, narrow: bool) -> dict:
    """The shipped UNet config; narrowed (a tenth of the channels, same blocks and attention levels)."""
    config = _config(family, "unet")
    if not narrow:
        return config
    channels = [c // 10 for c in config["block_out_channels"]]
    config.update(block_out_channels=channels, norm_num_groups=8, layers_per_block=1)
    if family == "sdxl":  # heads of 16 channels; a text-time embedding sized for two 32-wide text encoders
        layers = config["transformer_layers_per_block"]
        config.update(attention_head_dim=[c // 16 for c in channels], cross_attention_dim=64,
                      addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + 32,
                      transformer_layers_per_block=[min(n, 2) for n in layers])
    else:
        config.update(attention_head_dim=2, cross_attention_dim=32)
    return config


def vae_config(family: str, narrow: bool) -> dict:
    """The shipped VAE config; narrowed (an eighth of the channels, one layer a block)."""
    config = _config(family, "vae")
    if narrow:
        config.update(block_out_channels=[c // 8 for c in config["block_out_channels"]], norm_num_groups=8,
                      layers_per_block=1)
    return config


def _text_config(family: str, part: str, narrow: bool) -> dict:
    config = _config(family, part)
    if narrow:
        config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      projection_dim=32)
    return config


def build_unet(family: str, scale: Scale, device: str, dtype):
    from diffusers import UNet2DConditionModel

    with building(device, dtype):
        return UNet2DConditionModel(**unet_config(family, scale.narrow)).eval()


def build_sdxl_pipeline(scale: Scale, device: str, dtype):
    """SDXL as storyd loads it (the same classes and scheduler), with random weights."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from storyd.render.schedulers import scheduler_from_folder
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.weights.paths import storyd_home

    # the scheduler's tables stay on the CPU, as when storyd loads it (made on the GPU, numpy cannot read them)
    home = storyd_home()
    rest = dict(tokenizer=load_clip_tokenizer(home), tokenizer_2=load_clip_tokenizer(home, pad_token="!"),
                scheduler=scheduler_from_folder(CONFIGS / "sdxl" / "scheduler"))
    with building(device, dtype):
        pipe = StableDiffusionXLPipeline(
            vae=AutoencoderKL(**vae_config("sdxl", scale.narrow)),
            text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config("sdxl", "text_encoder", scale.narrow))),
            text_encoder_2=CLIPTextModelWithProjection(
                CLIPTextConfig(**_text_config("sdxl", "text_encoder_2", scale.narrow))),
            unet=UNet2DConditionModel(**unet_config("sdxl", scale.narrow)), **rest,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _unet_inputs(config: dict, batch: int, latent: int, device: str, dtype) -> dict:
    import torch

    g = torch.Generator().manual_seed(batch)
    inputs = dict(
        sample=torch.randn(batch, 4, latent, latent, generator=g).to(device, dtype),
        timestep=500,
        encoder_hidden_states=torch.randn(batch, 77, config["cross_attention_dim"], generator=g).to(device, dtype),
    )
    if config.get("addition_embed_type") == "text_time":
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        inputs["added_cond_kwargs"] = {"text_embeds": torch.zeros(batch, pooled, device=device, dtype=dtype),
                                       "time_ids": torch.zeros(batch, 6, device=device, dtype=dtype)}
    return inputs


# --- CSA step cost -----------------------------------------------------------------------------


def _csa_state(device: str, storage: str):
    """storyd's CSA state with the published settings and 4 references, its bank kept on ``storage``:
    the device (what `bank_device: auto` picks where the bank fits beside the model) or "cpu" (host
    memory, auto's next choice). The one place this benchmark touches the bank."""
    from storyd.csa.bank import CharacterBank
    from storyd.csa.processor import ConsistencyState
    from storyd.story.model import ConsistencySettings

    settings = ConsistencySettings(id_panels=REFERENCES)
    return ConsistencyState(settings, seed=0, bank=CharacterBank(storage), device=device)


def _steps(unet, x: dict, device: str, steps: int, warmup: int, begin_step) -> tuple[float, int]:
    """Mean seconds of the steps after warm-up, and the peak memory over all of them."""
    times = []
    with Peak(device) as peak:
        for step in range(steps):
            begin_step(step)
            seconds = _timed(device, lambda: unet(**x))
            if step >= warmup:
                times.append(seconds)
    return sum(times) / len(times), peak.bytes


def csa_rows(family: str, scale: Scale, device: str, dtype, official: dict | None) -> list[dict]:
    import torch

    from storyd.csa.processor import OFF, READ, WRITE, consistent_attention

    unet = build_unet(family, scale, device, dtype)
    config = unet_config(family, scale.narrow)
    side = scale.sides[family]
    latent = side // 8
    results: dict[tuple[str, int], tuple[float, int]] = {}
    banks = {}
    for place in ("device", "host"):
        state = _csa_state(device, device if place == "device" else "cpu")
        with torch.inference_mode(), consistent_attention(unet, state, state.settings.layers):
            def batch(mode: str, images: int, state=state) -> tuple[float, int]:
                state.begin_batch(mode, [("A",)] * images, cfg=True)
                x = _unet_inputs(config, 2 * images, latent, device, dtype)
                return _steps(unet, x, device, scale.steps, max(state.settings.warmup_steps, 1), state.begin_step)

            if place == "device":
                batch(OFF, 1)  # warm-up: kernels, allocator
                results[("stock", REFERENCES)] = batch(OFF, REFERENCES)
                results[("write", REFERENCES)] = batch(WRITE, REFERENCES)
                banks["write"] = banks["read"] = state.bank.nbytes()
                results[("stock", 1)] = batch(OFF, 1)
                for k in range(1, READS + 1):
                    results[("read", k)] = batch(READ, 1)
            else:  # the same write and first read with the bank in host memory
                results[("host write", REFERENCES)] = batch(WRITE, REFERENCES)
                banks["host write"] = banks["host read"] = state.bank.nbytes()
                results[("host read", 1)] = batch(READ, 1)
        state.bank.entries.clear()  # this placement's bank leaves the device before the next is measured
        _free(device)
    model = f"{family} {side}px"
    labels = {"stock": "stock attention, {} panel(s)", "write": "CSA write, {} references",
              "read": f"CSA read, panel {{}} of {READS}", "host write": "CSA write, {} references, bank on host",
              "host read": "CSA read, panel {}, bank on host"}
    rows = []
    for (kind, number), (seconds, peak) in results.items():
        images = 1 if kind.endswith("read") else number
        rows.append(_row("csa", model, labels[kind].format(number), images=images, s_step=seconds,
                         x_stock=None if kind == "stock" else seconds / results[("stock", images)][0], peak=peak,
                         bank=banks.get(kind), note=f"drawn before: {REFERENCES + number - 1}" if kind == "read" else
                         "bank on the device" if kind == "write" else ""))
    if official is not None:
        rows += official_rows(official, unet, config, latent, scale, device, dtype, results, model)
    return rows


def flatness(rows: list[dict], model: str) -> dict:
    """max/min of the read rows' step time and peak memory, for the summary."""
    reads = [r for r in rows if r["part"] == "csa" and r["model"] == model and r["case"].startswith("CSA read")
             and not r["case"].endswith("bank on host")]
    times = [float(r["s/step"]) for r in reads]
    peaks = [float(r["peak MB"]) for r in reads]
    return {"time": max(times) / min(times), "memory": max(peaks) / min(peaks), "panels": len(reads)}


# --- the published processor, from a local clone -----------------------------------------------


def official_processor(repo: str | None) -> tuple[dict | None, str]:
    """A namespace holding the published processor class, taken from a local clone, or why there is none.

    The official script builds its UI and loads models when imported, so only its imports and the
    class are compiled from its source (with the imports and functions of its utils/gradio_utils.py);
    the namespace then stands in for the script's module globals, which the class reads and writes
    (step and layer counters, write/read switch, sampling rates). Nothing of it is copied here.
    """
    if not repo:
        return None, f"not found (set {OFFICIAL_ENV} to a local clone of HVision-NKU/StoryDiffusion)"
    script = Path(repo) / OFFICIAL_SCRIPT
    if not script.is_file():
        return None, f"not found: no {OFFICIAL_SCRIPT} in {repo}"
    namespace: dict = {"__name__": "storydiffusion"}
    body = ast.parse(script.read_text()).body
    classes = [n for n in body if isinstance(n, ast.ClassDef) and n.name == OFFICIAL_CLASS]
    if not classes:
        return None, f"not found: no class {OFFICIAL_CLASS} in {script}"
    helpers = Path(repo) / "utils" / "gradio_utils.py"
    parts = [(script, [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))])]
    if helpers.is_file():
        helper_body = ast.parse(helpers.read_text()).body
        parts.insert(0, (helpers, [n for n in helper_body if isinstance(n, (ast.Import, ast.ImportFrom))]))
        parts.append((helpers, [n for n in helper_body if isinstance(n, ast.FunctionDef)]))
    parts.append((script, classes))
    for path, nodes in parts:
        for node in nodes:
            try:  # an import of the UI or of the repository's own packages may fail; the class may not need it
                exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
            except ImportError:
                continue
            except Exception as exc:  # someone else's code: what it raises is reported, the benchmark goes on
                return None, f"could not load from {path}: {type(exc).__name__}: {exc}"[:120]
    return namespace, f"loaded from {script}"


def official_rows(namespace: dict, unet, config: dict, latent: int, scale: Scale, device: str, dtype,
                  results: dict, model: str) -> list[dict]:
    """The published processor on the up blocks' self-attention, as its script installs it: write of the
    4 references, then one read panel; its globals set as the script sets them before each call."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    cls = namespace[OFFICIAL_CLASS]
    accepted = inspect.signature(cls).parameters  # device and dtype, where it takes them, are this run's
    arguments = {k: v for k, v in {"id_length": REFERENCES, "device": device, "dtype": dtype}.items() if k in accepted}
    processors = {}
    for name in unet.attn_processors:
        patched = name.startswith("up_blocks") and name.endswith("attn1.processor")
        processors[name] = cls(**arguments) if patched else AttnProcessor2_0()
    original = dict(unet.attn_processors)
    side = latent * 8
    namespace.update(total_count=sum(isinstance(p, cls) for p in processors.values()), sa32=0.5, sa64=0.5,
                     height=side, width=side, id_length=REFERENCES, cur_character=["A"], character_dict={"A": "A"})
    rows = []
    unet.set_attn_processor(processors)
    try:
        with torch.inference_mode():
            for mode, images in (("write", REFERENCES), ("read", 1)):
                namespace.update(write=mode == "write", cur_step=0, attn_count=0)
                x = _unet_inputs(config, 2 * images, latent, device, dtype)
                seconds, peak = _steps(unet, x, device, scale.steps, 1, lambda step: None)
                stock = results[("stock", images)][0]
                rows.append(_row("csa", model, f"official {mode}, {'4 references' if images > 1 else 'panel 1'}",
                                 images=images, s_step=seconds, x_stock=seconds / stock, peak=peak))
    except Exception as exc:  # someone else's code: whatever it raises is reported in the row
        rows.append(_row("csa", model, "official processor", note=f"could not run: {type(exc).__name__}: {exc}"[:120]))
    finally:
        unet.set_attn_processor(original)
    return rows


# --- the lighthouse story, whole ---------------------------------------------------------------


def lighthouse_rows(scale: Scale, device: str) -> list[dict]:
    from storyd.plan.estimate import weights_bytes
    from storyd.plan.footprint import Budget, host_budget
    from storyd.plan.presets import get_preset
    from storyd.plan.render_plan import plan_story
    from storyd.render.generator import PanelGenerator
    from storyd.render.memory import MemorySettings, apply_memory, choose_memory, free_memory, torch_dtype
    from storyd.render.tokenizer import PromptTokenizer
    from storyd.story.loader import load_story
    from storyd.weights.paths import storyd_home

    story = load_story(LIGHTHOUSE)
    free = free_memory(device)
    memory = choose_memory(MemorySettings(), device, weights_bytes(get_preset(story.model), 2), free)
    budget = Budget(host_budget(), None if device == "cpu" else free, memory.offload)  # as `storyd comic` plans
    plan = plan_story(story, tokenizer=PromptTokenizer(storyd_home()), device=device, budget=budget)
    if scale.lighthouse is not None:
        side, steps = scale.lighthouse
        plan = dataclasses.replace(plan, width=side, height=side, steps=steps)
    pipe = apply_memory(build_sdxl_pipeline(scale, device, torch_dtype(memory.dtype)), memory, device)
    generator = PanelGenerator(pipe, plan, device=device)
    with Peak(device) as peak:
        started = time.perf_counter()
        generator.draw()
        _sync(device)
        seconds = time.perf_counter() - started
    batches = len(plan.batches({j.index for j in plan.jobs}))
    size = f"{plan.width}px, {plan.steps} steps"
    note = (f"{len(plan.jobs)} panels in {batches} batches; {memory.dtype}, offload {memory.offload}, "
            f"bank on the {plan.footprint.bank}")
    rows = [_row("lighthouse", f"sdxl {size}", "whole story (storyd)", s_total=seconds, peak=peak.bytes,
                 bank=generator.bank.nbytes(), note=note)]
    reduced = "" if scale.lighthouse is None else " (reduced size: not comparable)"
    for name, gb in PUBLISHED_GB.items():
        ratio = peak.bytes / (gb * 1000 * MB)
        rows.append(_row("lighthouse", "sdxl 1024px", f"{name} (published)", peak=int(gb * 1000 * MB),
                         note=f"storyd's peak / this: {ratio:.2f}{reduced}"))
    return rows


# --- animate backends --------------------------------------------------------------------------


def video_rows(backend: str, scale: Scale, device: str, dtype) -> list[dict]:
    import torch

    video = scale.video[backend]
    latent = ((video.frames - 1) // 4 + 1, video.height // 8, video.width // 8)
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    if backend == "animatediff":
        model, forward, passes = _animatediff(scale, device, dtype, video, randn)
    else:
        from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

        config = dict(WAN_FULL[backend])
        if scale.narrow:
            config.update(WAN_NARROW)
            if "added_kv_proj_dim" in config:
                config.update(image_dim=8, added_kv_proj_dim=16)
            if "vace_layers" in config:
                config.update(vace_layers=[0])
        cls = WanTransformer3DModel if backend == "wan-flf2v" else WanVACETransformer3DModel
        with building(device, dtype):
            model = cls(**config).eval()
        inputs = dict(hidden_states=randn(1, config["in_channels"], *latent), return_dict=False,
                      timestep=torch.tensor([500], device=device),
                      encoder_hidden_states=randn(1, video.text_tokens, config["text_dim"]))
        if backend == "wan-flf2v":  # CLIP's tokens of the first and the last frame
            inputs["encoder_hidden_states_image"] = randn(2, config["pos_embed_seq_len"] // 2, config["image_dim"])
        else:
            inputs["control_hidden_states"] = randn(1, config["vace_in_channels"], *latent)

        def forward():
            return model(**inputs)

        passes = 2  # Wan's pipelines run the conditional and unconditional passes one after the other
    with torch.inference_mode(), Peak(device) as peak:
        # warm-up: kernels, allocator (on an H200 AnimateDiff's cold step took 2.5 times a whole backend's warm one)
        forward()
        seconds = _timed(device, lambda: [forward() for _ in range(passes)])
    size = f"{video.width}x{video.height}, {video.frames} frames"
    note = f"1 step timed x {video.steps} steps / {video.frames} frames"
    if backend == "animatediff":
        note += "; UNet + motion module (no SparseCtrl, no image prompt)"
    return [_row("animate", backend, size, s_step=seconds, s_frame=seconds * video.steps / video.frames,
                 peak=peak.bytes, note=note)]


def _animatediff(scale: Scale, device: str, dtype, video: Video, randn):
    """SD1.5's UNet with a motion module (MotionAdapter's default config: AnimateDiff's layout)."""
    import torch
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    config = unet_config("sd15", scale.narrow)
    adapter = dict(block_out_channels=config["block_out_channels"], motion_layers_per_block=config["layers_per_block"])
    if scale.narrow:
        adapter.update(motion_norm_num_groups=8, motion_num_attention_heads=2)
    with building(device, dtype):
        model = UNetMotionModel.from_unet2d(UNet2DConditionModel(**config), MotionAdapter(**adapter)).eval()
    sample = randn(2, 4, video.frames, video.height // 8, video.width // 8)  # guidance: two halves
    # UNetMotionModel folds frames into the batch and takes the text so too, as storyd's sampler gives it
    text = randn(2, video.text_tokens, config["cross_attention_dim"]).repeat_interleave(video.frames, dim=0)

    def forward():
        return model(sample, torch.tensor(500, device=device), encoder_hidden_states=text, return_dict=False)

    return model, forward, 1


# AnimateDiff v3's motion module, SparseCtrl-RGB and CLIP ViT-H/14 (IP-Adapter's image encoder) as their
# repositories' config.json give them; written from the published configs, not checked against a download here.
MOTION_V3 = dict(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2, motion_num_attention_heads=8,
                 motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=False)
SPARSECTRL_RGB = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, in_channels=4,
                      conditioning_channels=4, attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32,
                      down_block_types=("CrossAttnDownBlockMotion",) * 3 + ("DownBlockMotion",),
                      use_simplified_condition_embedding=True, concat_conditioning_mask=True,
                      motion_num_attention_heads=8, motion_max_seq_length=32)
CLIP_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
              image_size=224, patch_size=14, projection_dim=1024)
IP_PLUS_SD15 = dict(resampler_dim=768, queries=16)


def animatediff_backend(scale: Scale, device: str, mode: str):
    """storyd's AnimateDiff backend (SD1.5 + v3 motion module + SparseCtrl-RGB + IP-Adapter Plus, CLIP ViT-H)
    assembled and placed (memory ``mode``) as :func:`load_animatediff_backend` does it, in its dtype (float16
    on CUDA), on random weights from the configs; narrowed on the CPU, with the registry's model at the
    scale's frame size."""
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        MotionAdapter,
        SparseControlNetModel,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from storyd.animate.backends.animatediff import (
        AnimateDiffBackend,
        assemble_pipeline,
        nest_ip_adapter,
        pipeline_dtype,
    )
    from storyd.animate.backends.placement import place_pipeline
    from storyd.animate.backends.registry import VIDEO_MODELS, NativeSize
    from storyd.animate.backends.tiny_animatediff import ip_adapter_plus_weights
    from storyd.animate.encoder import ClipImageEncoder
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.weights.paths import storyd_home

    dtype = pipeline_dtype(device)
    unet = unet_config("sd15", scale.narrow)
    motion, control, clip, ip = dict(MOTION_V3), dict(SPARSECTRL_RGB), dict(CLIP_H), dict(IP_PLUS_SD15)
    if scale.narrow:  # the UNet's narrowing (unet_config), applied to its companions
        channels = unet["block_out_channels"]
        motion.update(block_out_channels=channels, motion_layers_per_block=1, motion_norm_num_groups=8,
                      motion_num_attention_heads=2)
        control.update(block_out_channels=channels, layers_per_block=1, norm_num_groups=8, attention_head_dim=2,
                       cross_attention_dim=unet["cross_attention_dim"], motion_num_attention_heads=2)
        clip.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
        ip.update(resampler_dim=64)
    weights = ip_adapter_plus_weights(unet, clip["hidden_size"], ip["resampler_dim"], ip["queries"])
    tokenizer = load_clip_tokenizer(storyd_home())
    scheduler = DPMSolverMultistepScheduler.from_pretrained(
        str(CONFIGS / "sd15"), subfolder="scheduler", beta_schedule="linear", algorithm_type="dpmsolver++",
        use_karras_sigmas=True)
    with building(device, dtype):
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip)).eval()
        components = dict(
            vae=AutoencoderKL(**vae_config("sd15", scale.narrow)).eval(), tokenizer=tokenizer,
            scheduler=scheduler,
            text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config("sd15", "text_encoder", scale.narrow))).eval(),
            unet=UNet2DConditionModel(**unet).eval(), motion_adapter=MotionAdapter(**motion).eval(),
            controlnet=SparseControlNetModel(**control).eval(), image_encoder=encoder)
    pipe = assemble_pipeline(components, nest_ip_adapter(weights))
    place_pipeline(pipe, mode, device)
    video = scale.video["animatediff"]
    model = VIDEO_MODELS["animatediff-v3"]
    if scale.narrow:
        model = dataclasses.replace(model, native=NativeSize(video.width * video.height, 8, 2 / 3, 3 / 2))
    steps = scale.steps if scale.narrow else video.steps
    return AnimateDiffBackend(pipe, ClipImageEncoder(encoder, device=device, dtype=dtype), model, steps=steps)


def animatediff_render_rows(scale: Scale, device: str) -> list[dict]:
    """Whole transitions through storyd's AnimateDiff backend: seconds per frame and peak memory with keyframe
    attention at the backend's weight and off, for one motion window of frames and one and a half (FreeNoise
    windows), against what `storyd animate --plan` says for the same render. On CUDA the note gives the
    peak before the VAE's decode too."""
    from bench.bench_animate import _keyframes

    video = scale.video["animatediff"]
    start, end = _keyframes(video.width)
    backend = animatediff_backend(scale, device, "none")
    steps, weight = backend.steps, backend.keyframe_attention
    backend.steps = 2
    backend.render(start, end, video.frames, "a warm-up")  # kernels, allocator, cuDNN's choices
    backend.steps = steps
    rows, peaks = [], {}
    for frames in (video.frames, video.frames * 3 // 2):
        for backend_weight in (weight, 0.0):
            backend.keyframe_attention = backend_weight
            rows.append(_render_row(backend, "none", frames, start, end, device, peaks))
        added = peaks[frames, weight] - peaks[frames, 0.0]
        rows[-2]["note"] += f"; {added / MB:+.0f} MB of peak against keyframe attention off"
    return rows


def animatediff_offload_rows(scale: Scale, device: str, mode: str) -> list[dict]:
    """One window of frames through the backend under offload ``mode`` (model or group); none on the CPU
    (offload needs an accelerator to offload to)."""
    from bench.bench_animate import _keyframes

    if not device.startswith("cuda"):
        return []
    video = scale.video["animatediff"]
    start, end = _keyframes(video.width)
    return [_render_row(animatediff_backend(scale, device, mode), mode, video.frames, start, end, device, {})]


def _render_row(backend, mode: str, frames: int, start, end, device: str, peaks: dict) -> dict:
    import torch

    from storyd.animate.backends.registry import GB

    before_decode: dict[str, int] = {}
    decode = backend.pipe.vae.decode

    def recording(*args, **kwargs):  # the peak so far when the VAE first decodes: the denoising loop's
        if device.startswith("cuda"):
            before_decode.setdefault("peak", torch.cuda.max_memory_allocated())
        return decode(*args, **kwargs)

    backend.pipe.vae.decode = recording
    _free(device)
    try:
        with Peak(device) as peak:
            seconds = _timed(device, lambda: backend.render(start, end, frames, "a kid waves on a beach"))
    finally:
        del backend.pipe.vae.decode
    weight = backend.keyframe_attention
    peaks[frames, weight] = peak.bytes
    model = backend.model
    side = int(model.native.area ** 0.5)
    plan = model.peak_bytes[mode] + model.frame_bytes * max(frames - model.max_frames, 0)
    note = f"{backend.steps} steps, guidance, offload {mode}; --plan: {plan / GB:.2f} GB"
    if "peak" in before_decode:
        note += f"; before the decode: {before_decode['peak'] / GB:.2f} GB"
    return _row("animate", "animatediff (storyd)", f"{side}x{side}, {frames} frames, keyframe attention {weight:g}"
                + ("" if mode == "none" else f", offload {mode}"), s_frame=seconds / frames, s_total=seconds,
                peak=peak.bytes, note=note)


def interpolate_rows(scale: Scale) -> list[dict]:
    from bench.bench_animate import FRAMES, _keyframes
    from storyd.animate.interpolate import InterpolateBackend

    a, b = _keyframes(scale.interpolate_side)
    backend = InterpolateBackend()
    backend.render(a, b, 3)  # warm-up (OpenCV init)
    with Peak("cpu") as peak:
        seconds = _timed("cpu", lambda: backend.render(a, b, FRAMES))
    side = scale.interpolate_side
    return [_row("animate", "interpolate", f"{side}x{side}, {FRAMES} frames", s_frame=seconds / FRAMES,
                 peak=peak.bytes, note="on the CPU, whatever the device (host RSS)")]


# --- the table ---------------------------------------------------------------------------------


def _row(part: str, model: str, case: str, *, images: int | None = None, s_step: float | None = None,
         x_stock: float | None = None, s_frame: float | None = None, s_total: float | None = None,
         peak: int | None = None, bank: int | None = None, note: str = "") -> dict:
    def shown(value, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    return {"part": part, "model": model, "case": case, "images/step": "" if images is None else str(images),
            "s/step": shown(s_step, 4), "x stock": shown(x_stock, 2), "s/frame": shown(s_frame, 4),
            "s total": shown(s_total, 1), "peak MB": shown(None if peak is None else peak / MB, 0),
            "bank MB": shown(None if bank is None else bank / MB, 1), "note": note}


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return "cpu"


def output_path(device: str) -> Path:
    """Where the table goes: STORYD_BENCH_OUT, else out/bench/gpu-<device>-<date>.md."""
    chosen = os.environ.get("STORYD_BENCH_OUT")
    if chosen:
        return Path(chosen)
    slug = "".join(c if c.isalnum() else "-" for c in device_name(device).lower()).strip("-")
    return ROOT / "out" / "bench" / f"gpu-{slug}-{date.today().isoformat()}.md"


def summary(rows: list[dict], scale: Scale) -> list[str]:
    """The issue's targets, as measured by these rows."""
    lines = []
    for family, side in scale.sides.items():
        model = f"{family} {side}px"
        write = next((r for r in rows if r["model"] == model and r["case"].startswith("CSA write")), None)
        if write is None:  # csa not among the parts run
            continue
        flat = flatness(rows, model)
        lines.append(f"- {model}: CSA write step {write['x stock']}x stock at {REFERENCES} panels (target <= 1.10); "
                     f"read step over {flat['panels']} panels: max/min time {flat['time']:.2f}, "
                     f"max/min peak memory {flat['memory']:.2f} (target: flat)")
    story = next((r for r in rows if r["part"] == "lighthouse" and r["case"].startswith("whole")), None)
    if story is not None:
        peak_gb = float(story["peak MB"]) / 1000
        lines.append(f"- lighthouse story peak {peak_gb:.2f} GB against the official 45.6 GB "
                     f"(target <= 22.8 GB){'; reduced size: not comparable' if scale.narrow else ''}")
    for row in rows:
        if row["model"] == "animatediff (storyd)":
            lines.append(f"- animatediff (storyd), {row['case']}: peak {float(row['peak MB']) / 1000:.2f} GB "
                         f"({row['note'].split('; ', 1)[1]})")
    return lines


def _part_rows(part: str, scale: Scale, device: str, dtype, namespace, official_note: str) -> list[dict]:
    if part.startswith("csa "):
        family = part.split()[1]
        rows = csa_rows(family, scale, device, dtype, namespace if family == "sdxl" else None)
        if family == "sdxl" and namespace is None:
            rows.append(_row("csa", f"sdxl {scale.sides['sdxl']}px", "official processor", note=official_note))
        return rows
    if part == "lighthouse":
        return lighthouse_rows(scale, device)
    if part == "interpolate":
        return interpolate_rows(scale)
    if part == "animatediff render":
        return animatediff_render_rows(scale, device)
    if part.startswith("animatediff offload "):
        return animatediff_offload_rows(scale, device, part.split()[-1])
    return video_rows(part, scale, device, dtype)


def chosen_parts(scale: Scale, parts: tuple[str, ...] | None) -> tuple[str, ...]:
    """``parts``, else STORYD_BENCH_PARTS (comma-separated), else all of them; an unknown name raises."""
    named = os.environ.get("STORYD_BENCH_PARTS")
    chosen = parts or (tuple(p.strip() for p in named.split(",")) if named else tuple(scale.estimate_s))
    unknown = [p for p in chosen if p not in scale.estimate_s]
    if unknown:
        raise SystemExit(f"bench gpu: unknown part(s) {', '.join(unknown)}; choose from: {', '.join(scale.estimate_s)}")
    return chosen


def run(scale: Scale | None = None, out: Path | None = None, parts: tuple[str, ...] | None = None) -> list[dict]:
    """Every row (printed as a table by `python -m bench gpu`); the table and the summary go to `out`,
    rewritten after each part, so a run cut short keeps what it measured. A part that raises gets a
    "failed" row with the error (its traceback on stderr) and the others still run."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    scale = scale or (FULL if device == "cuda" else REDUCED)
    chosen = chosen_parts(scale, parts)
    planned = sum(scale.estimate_s[p] for p in chosen)
    print(f"bench gpu: {scale.name} size on {device_name(device)}; planned about {planned // 60} min {planned % 60} s "
          f"({', '.join(f'{p} {scale.estimate_s[p]} s' for p in chosen)})", flush=True)
    from storyd.render.memory import MemorySettings, choose_memory, torch_dtype

    dtype = torch_dtype(choose_memory(MemorySettings(), device, 0, None).dtype)
    namespace, official_note = official_processor(os.environ.get(OFFICIAL_ENV))
    out = out or output_path(device)
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)  # small ops: a second thread only adds contention on a shared 2-core machine
    started = time.perf_counter()
    rows: list[dict] = []
    try:
        for part in chosen:
            try:
                rows += _part_rows(part, scale, device, dtype, namespace, official_note)
            except Exception as exc:  # one part's failure is a row; the others still run
                traceback.print_exc()
                rows.append(_row(part.split()[0], part, "failed", note=f"{type(exc).__name__}: {exc}"[:160]))
            _free(device)
            print(f"  {part}: done at {time.perf_counter() - started:.0f} s", flush=True)
            _write(out, rows, scale, device, dtype, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    print(f"bench gpu: took {time.perf_counter() - started:.0f} s; table written to {out}", flush=True)
    return rows


def _write(out: Path, rows: list[dict], scale: Scale, device: str, dtype, seconds: float) -> None:
    from bench.__main__ import format_table

    header = (f"# bench gpu: {device_name(device)}, {scale.name} size, {date.today().isoformat()}\n\n"
              f"Took {seconds:.0f} s. `python -m bench gpu` (bench/bench_gpu.py); random weights in "
              f"{str(dtype).removeprefix('torch.')}.\n")
    if scale.narrow:
        header += "\nReduced size (no CUDA here): narrow models, small latents; these numbers test the code only.\n"
    text = header + format_table("GPU benchmark", rows) + "\n## Targets\n\n" + "\n".join(summary(rows, scale)) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("GPU benchmark", run())
