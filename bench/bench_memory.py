"""Memory options: time and peak memory per panel for each option storyd has, against the default.

A whole SDXL pipeline around bench_csa's UNet (the real block layout, narrower; 48x48
latents) with an 8x VAE (384 px panels) and small text encoders; 2 panels per batch,
guidance on, 4 steps, the stock attention processor. Each option runs in a fresh process,
set up by storyd's own `choose_memory` and `apply_memory`, and draws the batch three times:
"first s" is the first batch (it includes `torch.compile`'s compilation); s/panel is the
faster of the other two, per panel, in wall time and in the process's CPU time (all
threads: steadier than wall time on a shared machine, and what "x default" compares).
Peak memory on the CPU is the RSS high-water mark (`ru_maxrss`) less the RSS once the
pipeline is loaded, i.e. what drawing adds; on CUDA, the peak allocated over the loaded
pipeline. Options storyd refuses on this device are printed as n/a with its reason, not
measured. `compile` runs only with STORYD_BENCH_COMPILE=1: compiling the UNet takes
minutes on 2 CPU cores, more than the whole benchmark's budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PANELS = 2
STEPS = 4
OPTIONS = {  # name -> storyd.render.memory.MemorySettings fields
    "default": {},
    "vae slicing": {"vae_slicing": True},
    "vae tiling": {"vae_tiling": True},
    "bf16": {"dtype": "bf16"},
    "fp16": {"dtype": "fp16"},
    "model offload": {"offload": "model"},
    "sequential offload": {"offload": "sequential"},
    "compile": {"compile": True},
}
VAE = dict(  # SDXL's 8x VAE layout, narrower; tiles of 128 px
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(32, 64, 64, 64),
    layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=16,
    sample_size=128,
)


def build_pipeline():
    """The benchmark's SDXL pipeline (fp32, on the CPU), with the same weights in every process."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from bench.bench_csa import build_unet
    from storyd.plan.tiny_configs import SCHEDULER_CONFIG, TEXT_CONFIG
    from storyd.render.tokenizer import load_clip_tokenizer
    from storyd.weights.paths import storyd_home

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return StableDiffusionXLPipeline(
            vae=AutoencoderKL(**VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**{**TEXT_CONFIG, "projection_dim": 64})),
            tokenizer=load_clip_tokenizer(storyd_home()),
            tokenizer_2=load_clip_tokenizer(storyd_home(), pad_token="!"),
            unet=build_unet(),
            scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        )


def memory_plan(option: str, device: str):
    """storyd's choice for this option on this device; InputError where storyd refuses it."""
    from storyd.render.memory import GB, MemorySettings, choose_memory, free_memory

    return choose_memory(MemorySettings(**OPTIONS[option]), device, GB // 10, free_memory(device))


def case(option: str, device: str) -> dict:
    """Run in a child process: draw the batch twice with the option; times and peak memory."""
    import resource
    import time

    import psutil
    import torch

    from bench.bench_csa import LATENT
    from storyd.render.memory import apply_memory

    pipe = apply_memory(build_pipeline(), memory_plan(option, device), device)
    pipe.set_progress_bar_config(disable=True)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = psutil.Process().memory_info().rss
    side = LATENT * pipe.vae_scale_factor

    def draw() -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            pipe(
                prompt=["a kid with red hair on the beach"] * PANELS,
                negative_prompt=["blurry"] * PANELS,
                num_inference_steps=STEPS,
                guidance_scale=5.0,
                width=side,
                height=side,
                generator=[torch.Generator().manual_seed(i) for i in range(PANELS)],
                output_type="np",
            )
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started, time.process_time() - cpu

    first = draw()[0]
    runs = [draw(), draw()]
    seconds, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    if cuda:
        peak, total = torch.cuda.max_memory_allocated() - base, torch.cuda.max_memory_allocated()
    else:
        total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = total - base
    return {"first": first, "seconds": seconds, "cpu": cpu, "peak_bytes": max(peak, 0), "total_bytes": total}


def _measure(option: str, device: str) -> dict:
    code = f"import json, bench.bench_memory as b; print(json.dumps(b.case({option!r}, {device!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": last[:100]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _results(device: str) -> dict[str, dict]:
    from storyd.errors import InputError

    results: dict[str, dict] = {}
    for option in OPTIONS:
        if option == "compile" and not os.environ.get("STORYD_BENCH_COMPILE"):
            results[option] = {"skipped": "minutes of compiling on a CPU; STORYD_BENCH_COMPILE=1 runs it"}
            continue
        try:
            memory_plan(option, device)
        except InputError as exc:
            results[option] = {"refused": exc.message}
            continue
        results[option] = _measure(option, device)
    return results


def _row(device: str, option: str, r: dict, default: dict) -> dict:
    row = {"device": device, "option": option}
    if "seconds" not in r:
        if "refused" in r:
            label = "n/a (needs CUDA)" if device == "cpu" else "n/a"
        else:
            label = "skipped" if "skipped" in r else "failed"
        return {**row, "s/panel": label, "why": r.get("refused") or r.get("skipped") or r.get("error", "")}

    def ratio(key: str) -> str:
        return f"{r[key] / default[key]:.2f}" if default.get(key) else ""

    return {
        **row,
        "s/panel": f"{r['seconds'] / PANELS:.2f}",
        "cpu s/panel": f"{r['cpu'] / PANELS:.2f}",
        "x default": ratio("cpu"),
        "peak MB/batch": f"{r['peak_bytes'] / 1e6:.0f}",
        "x default peak": ratio("peak_bytes"),
        "process peak MB": f"{r['total_bytes'] / 1e6:.0f}",
        "first s": f"{r['first']:.1f}",
    }


def run() -> list[dict]:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        results = _results(device)
        rows += [_row(device, option, r, results["default"]) for option, r in results.items()]
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("Memory options", run())
