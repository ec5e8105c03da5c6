"""Wan 2.1 backends on diffusers' own pipelines: FLF2V (first and last frame) and VACE (masked video).

``wan-flf2v`` gives ``WanImageToVideoPipeline`` the two keyframes as ``image`` and
``last_image``. ``wan-vace`` gives ``WanVACEPipeline`` a conditioning video that holds the
keyframes at both ends and grey in between, with a mask that is black (keep) on the two
keyframes and white (generate) on every frame between. Both render at the model's native size
(:mod:`storyd.animate.backends.framing`) with a frame count of 4k+1, and nothing is pasted
over the result: the first and last frames are what the model drew.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from storyd.animate.backends.framing import from_native, plan_framing, to_native
from storyd.animate.backends.registry import VideoModel, frames_for

KINDS = ("flf2v", "vace")


@dataclass
class WanBackend:
    """``Backend`` for :func:`storyd.animate.animate` around a loaded Wan pipeline."""

    pipe: object  # WanImageToVideoPipeline (flf2v) or WanVACEPipeline (vace)
    model: VideoModel
    kind: str  # one of KINDS
    fit: str = "letterbox"
    steps: int = 50
    guidance_scale: float = 5.0
    negative_prompt: str = ""
    seed: int = 0
    max_sequence_length: int = 512  # UMT5 tokens per prompt, as Wan was trained

    @property
    def name(self) -> str:
        return f"wan-{self.kind}"

    def render(self, start: Image.Image, end: Image.Image, frames: int, prompt: str | None = None) -> list[np.ndarray]:
        import torch

        framing = plan_framing(start.size, self.model.native, self.fit)
        first, last = to_native(start, framing), to_native(end, framing)
        count = frames_for(self.model, frames)
        width, height = framing.size
        common = dict(
            prompt=prompt or "", negative_prompt=self.negative_prompt, height=height, width=width, num_frames=count,
            num_inference_steps=self.steps, guidance_scale=self.guidance_scale, output_type="np",
            generator=torch.Generator("cpu").manual_seed(self.seed), max_sequence_length=self.max_sequence_length,
        )
        if self.kind == "flf2v":
            video = self.pipe(image=first, last_image=last, **common).frames[0]
        else:
            condition, mask = vace_inputs(first, last, count)
            video = self.pipe(video=condition, mask=mask, **common).frames[0]
        clip = [np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8) for frame in video]  # (H, W, 3) in [0, 1]
        return from_native(clip, framing, start.size)


def vace_inputs(first: Image.Image, last: Image.Image, frames: int) -> tuple[list[Image.Image], list[Image.Image]]:
    """VACE's conditioning video (keyframes at the ends, grey between) and its mask (white: generate)."""
    grey = Image.new("RGB", first.size, (127, 127, 127))
    keep, generate = Image.new("L", first.size, 0), Image.new("L", first.size, 255)
    video = [first, *[grey] * (frames - 2), last]
    mask = [keep, *[generate] * (frames - 2), keep]
    return video, mask


def load_wan_backend(
    model: VideoModel,
    *,
    device: str,
    mode: str,
    fit: str,
    seed: int,
    note: Callable[[str], None],
    folder: Path | None = None,
) -> WanBackend:
    """The backend on the pinned weights (offline); raises WeightsError naming what to pull.

    ``mode`` is the memory mode: none (all on the GPU), model (diffusers' model CPU
    offload) or group (group offload, layer by layer with CUDA streams); VAE tiling is on
    with offload. bfloat16 on a GPU, float32 elsewhere; the VAE and the CLIP image encoder
    stay float32, as Wan's model cards do.
    """
    import torch
    from diffusers import AutoencoderKLWan

    if folder is None:
        from storyd.weights import load_lock, resolve

        folder = Path(resolve(load_lock().get(model.weights[0])))
    kind = model.backend.removeprefix("wan-")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    vae = AutoencoderKLWan.from_pretrained(str(folder), subfolder="vae", torch_dtype=torch.float32)
    if kind == "flf2v":
        from diffusers import WanImageToVideoPipeline
        from transformers import CLIPVisionModel

        encoder = CLIPVisionModel.from_pretrained(str(folder), subfolder="image_encoder", dtype=torch.float32)
        pipe = WanImageToVideoPipeline.from_pretrained(
            str(folder), vae=vae, image_encoder=encoder, torch_dtype=dtype, local_files_only=True
        )
    else:
        from diffusers import WanVACEPipeline

        pipe = WanVACEPipeline.from_pretrained(str(folder), vae=vae, torch_dtype=dtype, local_files_only=True)
    if mode == "none":
        pipe.to(device)
    elif mode == "model":
        from storyd.render.memory import offload_target

        kind, gpu_id = offload_target(device)
        pipe.enable_model_cpu_offload(gpu_id=gpu_id, device=kind)
    else:
        pipe.enable_group_offload(onload_device=torch.device(device), offload_type="leaf_level", use_stream=True)
    if mode != "none":
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    note(f"{model.name}: memory mode {mode}{', VAE tiling' if mode != 'none' else ''}")
    return WanBackend(pipe, model, kind, fit=fit, seed=seed)
