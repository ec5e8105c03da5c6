"""Consistent Self-Attention: time and peak memory per denoising step against the stock processor.

An SDXL-shaped UNet (the real block layout and attention levels, narrower) at a 48x48
latent (384 px), guidance on (batch 2 x images). Each case runs in a fresh process so
its peak memory (RSS high-water mark on the CPU, max allocated on CUDA) is its own.
Write mode: n reference panels of one character in one batch. Read mode: a story of n
panels whose 2 reference panels were drawn first, read panels in batches of 4: the step
of one read batch is what every later panel costs, whatever n is.
"""

from __future__ import annotations

import json
import subprocess
import sys

SIZES = (2, 4, 8, 16)
LATENT = 48  # 384 px at SDXL's 8x VAE: 576 and 144 tokens at the two attention levels
READ_BATCH = 4
UNET = dict(
    sample_size=LATENT,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(32, 64, 128),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 4),
    cross_attention_dim=64,
    attention_head_dim=(2, 4, 8),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=16,
    projection_class_embeddings_input_dim=16 * 6 + 64,
    norm_num_groups=16,
)


def build_unet(seed: int = 0):
    """The benchmark UNet, with the same weights in every process."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**UNET)


def case(mode: str, n: int, device: str) -> dict:
    """Run in a child process: time and peak memory of one denoising step."""
    import resource
    import time

    import psutil
    import torch

    from storyd.csa.processor import OFF, READ, WRITE, ConsistencyState, consistent_attention
    from storyd.story.model import ConsistencySettings

    torch.set_grad_enabled(False)
    unet = build_unet().to(device).eval()
    images = READ_BATCH if mode == "read" else n

    def inputs(batch: int):
        g = torch.Generator().manual_seed(batch)
        return dict(
            sample=torch.randn(batch, 4, LATENT, LATENT, generator=g).to(device),
            timestep=500,
            encoder_hidden_states=torch.randn(batch, 8, 64, generator=g).to(device),
            added_cond_kwargs={
                "text_embeds": torch.zeros(batch, 64, device=device),
                "time_ids": torch.zeros(batch, 6, device=device),
            },
        )

    settings = ConsistencySettings(warmup_steps=0, random_skip=False)
    state = ConsistencyState(settings, seed=0, device=device)
    with consistent_attention(unet, state, "up"):
        if mode == "read":  # the two reference panels of a story of n panels, drawn first
            state.begin_batch(WRITE, [("A",)] * 2, cfg=True)
            unet(**inputs(4))
            state.begin_batch(READ, [("A",)] * images, cfg=True)
        else:
            state.begin_batch(WRITE if mode == "write" else OFF, [("A",)] * images, cfg=True)
        x = inputs(2 * images)
        unet(**x)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = psutil.Process().memory_info().rss
        times = []
        for _ in range(3):
            started = time.perf_counter()
            unet(**x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds": sorted(times)[1], "peak_bytes": max(peak, 0), "bank_bytes": state.bank.nbytes()}


def run() -> list[dict]:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for n in SIZES:
            results = {}
            for mode in ("stock", "write", "read"):
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        f"import json, bench.bench_csa as b; print(json.dumps(b.case({mode!r}, {n}, {device!r})))",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            stock = results["stock"]
            for mode in ("stock", "write", "read"):
                r = results[mode]
                batch = READ_BATCH if mode == "read" else n
                rows.append(
                    {
                        "device": device,
                        "panels": n,
                        "mode": mode,
                        "images/step": batch,
                        "s/step": f"{r['seconds']:.3f}",
                        "x stock": f"{r['seconds'] / stock['seconds']:.2f}" if mode == "write" else "",
                        "peak MB": f"{r['peak_bytes'] / 1e6:.0f}",
                        "bank MB": f"{r['bank_bytes'] / 1e6:.1f}" if mode != "stock" else "",
                    }
                )
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("CSA step cost", run())
