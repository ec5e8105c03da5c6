"""Train and evaluate the attribute reader on the toy world's own renders.

Generated images are softer and a little off-colour compared with renders, so
training renders are degraded at random: blur, noise, brightness and
per-channel colour gain, and (when a VAE is given) a round trip through the
VAE, which produces exactly the kind of softness the diffusion model draws.
"""

from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F

from storyd.toy.reader import HEADS, AttributeReader, ReaderNet, images_to_tensor, scene_labels
from storyd.toy.world import random_scene, render


def make_set(count: int, seed: int, two_prob: float = 0.3) -> tuple[list, torch.Tensor, dict[str, torch.Tensor]]:
    rng = random.Random(seed)
    scenes = [random_scene(rng, two_prob=two_prob) for _ in range(count)]
    x = images_to_tensor([render(s) for s in scenes])
    labels = [scene_labels(s) for s in scenes]
    return scenes, x, {name: torch.tensor([lab[name] for lab in labels]) for name in HEADS}


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur with a 5-tap separable kernel; sigma 0 leaves the image as is."""
    taps = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (B, 5)
    b, c, h, w = x.shape
    flat = x.reshape(1, b * c, h, w)
    kk = k.repeat_interleave(c, dim=0)
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), kk[:, None, None, :], groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), kk[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


@torch.no_grad()
def vae_round_trip(x: torch.Tensor, vae, batch: int = 256) -> torch.Tensor:
    return torch.cat([vae.decode(vae.encode(x[i : i + batch]).latent_dist.mode()).sample.clamp(-1, 1)
                      for i in range(0, len(x), batch)])


def degrade(x: torch.Tensor, g: torch.Generator, x_vae: torch.Tensor | None = None) -> torch.Tensor:
    """Random blur, colour gain, brightness shift and noise; half the batch from ``x_vae`` when given."""
    b = x.shape[0]
    if x_vae is not None:
        x = torch.where((torch.rand(b, generator=g) < 0.5)[:, None, None, None], x_vae, x)
    x = _blur(x, torch.rand(b, generator=g) * 1.1)
    gain = 1 + (torch.rand(b, 3, 1, 1, generator=g) - 0.5) * 0.16
    shift = (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.2
    x = (x + 1) * gain - 1 + shift
    x = x + torch.randn(x.shape, generator=g) * torch.rand(b, 1, 1, 1, generator=g) * 0.08
    return x.clamp(-1, 1)


def loss_fn(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(F.cross_entropy(logits[n], labels[n], ignore_index=-1) for n in HEADS) / len(HEADS)


def train_reader(seed: int = 0, steps: int = 1500, batch: int = 64, scenes: int = 12000, vae=None,
                 vae_scenes: int = 3000, init: AttributeReader | None = None,
                 log=None) -> tuple[AttributeReader, dict]:
    """Train a reader (from ``init``'s weights when given); returns it and training facts.

    The first ``vae_scenes`` renders also get a VAE round-trip version (the round trip is
    the costly part). ``log(step, loss)`` is called every 100 steps.
    """
    _, x, labels = make_set(scenes, seed)
    x_vae = None
    if vae is not None:
        x_vae = x.clone()
        x_vae[:vae_scenes] = vae_round_trip(x[:vae_scenes], vae)
    with torch.random.fork_rng(devices=[]):  # layer init draws from the default generator
        torch.manual_seed(seed)
        net = ReaderNet()
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    t0 = time.monotonic()
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = loss_fn(net(degrade(x[idx], g, None if x_vae is None else x_vae[idx])),
                       {n: v[idx] for n, v in labels.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % 100 == 0:
            log(step + 1, loss.item())
    net.eval()
    return AttributeReader(net), {"seed": seed, "steps": steps, "batch": batch, "scenes": scenes,
                                  "vae_round_trip_scenes": vae_scenes if vae is not None else 0,
                                  "final_loss": round(loss.item(), 4), "wall_time_s": round(time.monotonic() - t0, 1)}


@torch.no_grad()
def evaluate_reader(reader: AttributeReader, count: int = 1000, seed: int = 10_000, vae=None) -> dict:
    """Per-head accuracy on held-back renders (a seed the training set never used).

    With ``vae``, the renders go through a VAE round trip first (closer to generated images).
    """
    scenes, x, labels = make_set(count, seed)
    if vae is not None:
        x = vae_round_trip(x, vae)
    logits = reader.net(x)
    acc = {}
    for name in HEADS:
        mask = labels[name] >= 0
        acc[name] = round(float((logits[name].argmax(1)[mask] == labels[name][mask]).float().mean()), 4)
    return acc


def main() -> None:
    """``python -m storyd.toy.reader_train OUT_DIR [SEED] [VAE_DIR] [STEPS] [INIT_DIR]``: train, evaluate, save."""
    import json
    import sys
    from pathlib import Path

    args = sys.argv[1:]
    out = Path(args[0])
    seed = int(args[1]) if len(args) > 1 else 0
    vae = None
    if len(args) > 2 and args[2] != "-":
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args[2], torch_dtype=torch.float32).eval()
    steps = int(args[3]) if len(args) > 3 else 1500
    init = AttributeReader.load(Path(args[4])) if len(args) > 4 else None
    reader, facts = train_reader(seed, steps, vae=vae, init=init,
                                 log=lambda step, loss: print(f"step {step} loss {loss:.4f}", flush=True))
    if init is not None:
        facts["initialised_from"] = json.loads((Path(args[4]) / "config.json").read_text()).get("training")
    clean = evaluate_reader(reader)
    facts["accuracy_clean_renders"] = clean
    if vae is not None:
        facts["accuracy_vae_round_trip"] = evaluate_reader(reader, vae=vae)
    reader.save(out, {"training": facts})
    model_json = out.parent / "model.json"  # the toy model's facts sheet, when the reader sits beside it
    if model_json.exists():
        info = json.loads(model_json.read_text())
        info["reader"] = facts
        model_json.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
