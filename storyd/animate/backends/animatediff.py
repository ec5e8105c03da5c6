"""The paper's video stage on diffusers' ``AnimateDiffSparseControlNetPipeline`` (SD1.5 + AnimateDiff v3).

Per transition: the two keyframes, at the model's native size (:mod:`storyd.animate.backends.framing`),
are the SparseCtrl-RGB conditioning frames at indices 0 and N-1. Both are encoded into the
tokens IP-Adapter Plus takes (CLIP ViT-H/14's penultimate layer, CLS + 256 patch tokens); the
Semantic Motion Predictor (or, untrained, spherical interpolation) turns them into one token
set per frame, and frame f attends to its own set only (:class:`PerFrameIPAdapterAttnProcessor`).
Transitions longer than the motion module's training window run FreeNoise's sliding windows
inside every motion module (:func:`sliding_windows`). The first and last frames are held to the
keyframes' clean latents at every step (:class:`KeyframeHold`); nothing is pasted over the result. The
frames between also attend to the keyframes' tokens in their self-attention, to keep their look
(:mod:`storyd.animate.backends.keyframe_attention`), and the starting noise can be drawn at a lower
temperature (:meth:`AnimateDiffBackend.starting_noise`).

:func:`assemble_pipeline` takes the components themselves, so any UNet + MotionAdapter pair
(the SD1.5 one, a tiny one in the tests, a toy one) goes through the same code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AnimateDiffSparseControlNetPipeline
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from PIL import Image

from storyd.animate.backends.framing import from_native, plan_framing, to_native
from storyd.animate.backends.keyframe_attention import keyframe_attention
from storyd.animate.backends.placement import place_pipeline
from storyd.animate.backends.registry import VideoModel
from storyd.animate.encoder import ClipImageEncoder
from storyd.animate.motion import SemanticMotionPredictor, predict_embeddings
from storyd.errors import InputError


class PerFrameIPAdapterAttnProcessor(IPAdapterAttnProcessor2_0):
    """IP-Adapter cross-attention in which frame f of a video sees only image f's tokens.

    The pipeline is given one image per frame (``ip_adapter_image_embeds`` of shape
    (B, F, N, C)); UNetMotionModel repeats each video's images to all of its frames, so UNet
    row b·F + f holds all F images' tokens, (B·F, F, T, D). This keeps image f of row b·F + f
    and hands the rest to diffusers' processor unchanged. On a plain image (F = 1) it is that processor.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 scale: float = 1.0, ip_adapter_masks=None):
        if isinstance(encoder_hidden_states, tuple):
            text, images = encoder_hidden_states
            encoder_hidden_states = (text, [own_frame_tokens(tokens) for tokens in images])
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale,
                                ip_adapter_masks)


class KeyframeSparseCtrlPipeline(AnimateDiffSparseControlNetPipeline):
    """diffusers' pipeline, except that SparseCtrl-RGB gets the keyframes' latents as the VAE's mean,
    and the frames are decoded a few at a time.

    diffusers draws the keyframes' latents from the VAE's distribution with the global random
    generator, which no seed reaches, so two runs with one seed would differ. It decodes every frame
    in one VAE call, which at 512 x 512 peaks above the whole denoising loop: 16 frames in fp16 on an
    H200 peaked at 18.6 GB, against the loop's 12.8 (`python -m bench gpu`).
    """

    decode_chunk = 4  # frames per VAE decode; the VAE decodes each frame on its own, so the result is the same

    def decode_latents(self, latents):
        frames = latents.shape[2]
        chunks = [super(KeyframeSparseCtrlPipeline, self).decode_latents(latents[:, :, i:i + self.decode_chunk])
                  for i in range(0, frames, self.decode_chunk)]
        return torch.cat(chunks, dim=2)

    def prepare_image(self, image, width, height, device, dtype):
        if not self.controlnet.config.use_simplified_condition_embedding:
            return super().prepare_image(image, width, height, device, dtype)
        return self.keyframe_latents(image, width, height, device, dtype)

    def keyframe_latents(self, images, width, height, device, dtype) -> torch.Tensor:
        """The images' VAE means, scaled as the UNet sees latents: (1, 4, F, h, w)."""
        pixels = self.control_image_processor.preprocess(images, height=height, width=width)  # (F, 3, H, W) in [0, 1]
        pixels = (2 * pixels - 1).to(device, dtype)
        latents = self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor  # (F, 4, h, w)
        return latents.permute(1, 0, 2, 3).unsqueeze(0)


class KeyframeHold:
    """A ``callback_on_step_end`` that holds the first and last frames to the keyframes.

    After every step, frames 0 and F-1 are replaced by the keyframes' latents: clean, or with
    ``noised``, noised to the level the next step starts from (temporal inpainting by
    replacement, Ho et al., *Video Diffusion Models*, 2022, which is how a clip noised in
    training looks at its ends). Clean ends give the frames between, which attend to them
    (:mod:`storyd.animate.backends.keyframe_attention`), the keyframes' look itself rather
    than a noisy copy; on the toy stage they also placed the kid no worse. Either way the ends
    come out as the VAE's reconstruction of the keyframes; nothing is pasted in pixel space.
    """

    def __init__(self, keyframes: torch.Tensor, seed: int, noised: bool = True) -> None:
        self.keyframes = keyframes  # (1, C, 2, h, w): first and last
        self.noised = noised
        self.generator = torch.Generator("cpu").manual_seed(seed)

    def __call__(self, pipe, step: int, timestep, kwargs: dict) -> dict:
        latents = kwargs["latents"]
        held = self.keyframes.to(latents.device, latents.dtype).expand(latents.shape[0], -1, -1, -1, -1)
        upcoming = pipe.scheduler.timesteps[step + 1: step + 2]
        if self.noised and len(upcoming):
            noise = torch.randn(held.shape, generator=self.generator).to(latents.device, latents.dtype)
            held = pipe.scheduler.add_noise(held, noise, upcoming)
        latents = latents.clone()
        latents[:, :, 0], latents[:, :, -1] = held[:, :, 0], held[:, :, 1]
        return {"latents": latents}


def own_frame_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """(B·F, F, T, D) → (B·F, T, D): row b·F + f keeps image f."""
    rows, frames = tokens.shape[:2]
    if rows % frames:
        raise ValueError(f"{rows} UNet rows are not a whole number of {frames}-frame videos")
    index = torch.arange(rows, device=tokens.device)
    return tokens[index, index % frames]


def read_ip_adapter(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """An h94/IP-Adapter safetensors file as diffusers' ``load_ip_adapter`` takes a state dict."""
    from safetensors.torch import load_file

    return nest_ip_adapter(load_file(str(path)))


def nest_ip_adapter(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Flat ``image_proj.*`` / ``ip_adapter.*`` keys (the files' layout) → {"image_proj": ..., "ip_adapter": ...}."""
    state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        group, _, name = key.partition(".")
        if group in state:
            state[group][name] = value
    return state


def assemble_pipeline(components: dict, ip_adapter: dict[str, dict[str, torch.Tensor]]):
    """A :class:`KeyframeSparseCtrlPipeline` from its components, with the per-frame IP-Adapter installed.

    ``components`` holds vae, text_encoder, tokenizer, unet (a UNet2DConditionModel; the
    pipeline joins it with motion_adapter into a UNetMotionModel), motion_adapter,
    controlnet (SparseControlNetModel), scheduler and image_encoder (the CLIP vision model,
    registered so that offloading moves it too). ``ip_adapter`` is an IP-Adapter (Plus)
    state dict as :func:`read_ip_adapter` returns it. The pipeline stays where the components are.
    """
    pipe = KeyframeSparseCtrlPipeline(**components, feature_extractor=None)
    pipe.load_ip_adapter(ip_adapter, subfolder="", weight_name="", image_encoder_folder=None)
    unet = pipe.unet
    processors = {}
    for name, processor in unet.attn_processors.items():
        if isinstance(processor, IPAdapterAttnProcessor2_0):
            per_frame = PerFrameIPAdapterAttnProcessor(processor.hidden_size, processor.cross_attention_dim,
                                                       processor.num_tokens, processor.scale)
            per_frame.load_state_dict(processor.state_dict())
            processor = per_frame.to(unet.device, unet.dtype)
        processors[name] = processor
    unet.set_attn_processor(processors)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def sliding_windows(pipe, frames: int, window: int, stride: int) -> Iterator[None]:
    """FreeNoise's windowed temporal attention in every motion module of the UNet and SparseCtrl, for this block.

    With ``frames`` > ``window``, each motion-module transformer block becomes a diffusers
    ``FreeNoiseTransformerBlock`` over windows of ``window`` frames ``stride`` apart, blended
    with pyramid weights. It holds the original block's layers (no copy: the memory and any
    offload hooks stay), and the originals come back afterwards. Shorter clips run as they are.
    """
    from diffusers.models.attention import FreeNoiseTransformerBlock
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    if frames <= window:
        yield
        return
    swapped = []
    for model in (pipe.unet, pipe.controlnet):
        for module in model.modules():
            if not isinstance(module, AnimateDiffTransformer3D):
                continue
            for i, block in enumerate(module.transformer_blocks):
                # The same layers and settings as ``block`` (its attributes, not copies), run in windows.
                windowed = FreeNoiseTransformerBlock.__new__(FreeNoiseTransformerBlock)
                windowed.__dict__.update(block.__dict__)
                windowed.set_free_noise_properties(window, stride, "pyramid")
                module.transformer_blocks[i] = windowed
                swapped.append((module, i, block))
    try:
        yield
    finally:
        for module, i, block in swapped:
            module.transformer_blocks[i] = block


@dataclass
class AnimateDiffBackend:
    """``Backend`` for :func:`storyd.animate.animate`: encoder → motion predictor → AnimateDiff + SparseCtrl."""

    pipe: KeyframeSparseCtrlPipeline  # from assemble_pipeline
    encoder: ClipImageEncoder
    model: VideoModel
    predictor: SemanticMotionPredictor | None = None
    fit: str = "letterbox"
    steps: int = 25
    guidance_scale: float = 7.5
    image_prompt_scale: float = 1.0  # IP-Adapter Plus scale; 0 switches the image prompt off
    control_scale: float = 1.0  # SparseCtrl scale; 0 switches the keyframe conditioning off
    window: int = 16  # AnimateDiff v3 was trained on 16-frame clips
    stride: int = 4
    hold_keyframes: bool = True  # KeyframeHold: the ends are the keyframes' latents at every step
    hold_noised: bool = False  # held at the next step's noise level instead of clean
    keyframe_attention: float = 2.0  # the keyframes' tokens' weight in each frame's self-attention; 0: off
    noise_temperature: float = 1.0  # the starting noise's scale (see starting_noise); 1: the scheduler's own
    negative_prompt: str = ""
    seed: int = 0
    name: str = "animatediff"

    def render(self, start: Image.Image, end: Image.Image, frames: int, prompt: str | None = None) -> list[np.ndarray]:
        framing = plan_framing(start.size, self.model.native, self.fit)
        first, last = to_native(start, framing), to_native(end, framing)
        width, height = framing.size
        self.pipe.set_ip_adapter_scale(self.image_prompt_scale)
        hold = None
        if self.hold_keyframes:  # on the device the pipeline runs on: with offload the UNet rests on the CPU
            device = self.pipe._execution_device
            hold = KeyframeHold(self.pipe.keyframe_latents([first, last], width, height, device, self.pipe.unet.dtype),
                                self.seed, self.hold_noised)
        generator = torch.Generator("cpu").manual_seed(self.seed)
        latents = self.starting_noise(frames, width, height, generator)
        with (sliding_windows(self.pipe, frames, self.window, self.stride),
              keyframe_attention(self.pipe.unet, frames, self.keyframe_attention)):
            video = self.pipe(
                prompt=prompt or "", negative_prompt=self.negative_prompt, height=height, width=width,
                num_frames=frames, num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                ip_adapter_image_embeds=[self.frame_tokens(first, last, frames)],
                conditioning_frames=[first, last], controlnet_frame_indices=[0, frames - 1],
                controlnet_conditioning_scale=self.control_scale,
                latents=latents, generator=generator, output_type="np",
                callback_on_step_end=hold,
            ).frames[0]
        clip = [np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8) for frame in video]  # (H, W, 3) in [0, 1]
        return from_native(clip, framing, start.size)

    def starting_noise(self, frames: int, width: int, height: int, generator: torch.Generator) -> torch.Tensor:
        """The pipeline's own draw of starting noise from ``generator``, times ``noise_temperature``.

        Below 1 this is lower-temperature sampling: the frames between keep more of what the first
        steps make of the conditioning (the held keyframes, their tokens, keyframe attention), and
        the noise moves their look less. On the toy stage 0.3 raised identity agreement from 0.42 to
        0.52 and 0.35 to 0.46 on the tuning seeds, and placed the kid a little better too
        (docs/toy-model.md#video-stage); on SD1.5's weights it has not been measured, so its default stays 1.
        """
        from diffusers.utils.torch_utils import randn_tensor

        pipe = self.pipe
        shape = (1, pipe.unet.config.in_channels, frames, height // pipe.vae_scale_factor,
                 width // pipe.vae_scale_factor)
        # the pipeline draws in its prompt embeddings' dtype, the text encoder's
        noise = randn_tensor(shape, generator=generator, device=pipe._execution_device, dtype=pipe.text_encoder.dtype)
        return noise * self.noise_temperature

    def frame_tokens(self, first: Image.Image, last: Image.Image, frames: int) -> torch.Tensor:
        """Per-frame IP-Adapter Plus inputs, (1, L, N, C), with the unconditional ones first under guidance."""
        tokens = self.encoder.hidden_tokens([first, last])  # (2, N, C)
        if self.predictor is not None:
            config = self.predictor.config
            if frames > config.max_frames:
                raise InputError(f"--frames {frames} is more than the motion predictor's {config.max_frames}",
                                 f"pass --frames {config.max_frames} or fewer, or train with --frames {frames}")
            if (config.num_tokens, config.embed_dim) != tuple(tokens.shape[1:]):
                raise InputError(
                    f"the motion predictor takes {config.num_tokens} tokens of width {config.embed_dim}; IP-Adapter "
                    f"Plus takes {tokens.shape[1]} of width {tokens.shape[2]} (the image encoder's penultimate layer)",
                    "train the predictor on those tokens, or run without --motion-weights")
            tokens = tokens.to(next(self.predictor.parameters()).dtype)
        per_frame = predict_embeddings(tokens[:1], tokens[1:], frames, self.predictor)  # (1, L, N, C)
        if self.guidance_scale > 1:
            blank = self.encoder.hidden_tokens().to(per_frame.dtype)  # (1, N, C)
            per_frame = torch.cat([blank.unsqueeze(1).expand_as(per_frame), per_frame])  # (2, L, N, C)
        return per_frame.to(self.pipe.unet.dtype)


def pipeline_dtype(device: str) -> torch.dtype:
    """float16 on a GPU (the pinned weights' dtype), float32 elsewhere."""
    return torch.float16 if device.startswith("cuda") else torch.float32


def load_animatediff_backend(
    model: VideoModel,
    *,
    device: str,
    mode: str,
    fit: str,
    seed: int,
    motion_weights: Path | None,
    note: Callable[[str], None],
    paths: dict[str, Path] | None = None,
    **settings,
) -> AnimateDiffBackend:
    """The backend on the pinned weights, offline; ``paths`` maps lock names to where they are instead
    (a folder, or the file of a one-file entry, as :func:`storyd.weights.resolve` returns them);
    ``settings`` are :class:`AnimateDiffBackend` fields.

    Raises WeightsError naming what to pull. float16 on a GPU, float32 elsewhere; the
    scheduler is DPM-Solver++ with Karras sigmas on a linear beta schedule, as diffusers'
    SparseCtrl example runs it. ``mode`` is the memory mode (:func:`place_pipeline`).
    """
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        MotionAdapter,
        SparseControlNetModel,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    from storyd.animate.encoder import load_clip_encoder
    from storyd.animate.motion import load_predictor

    if paths is None:
        from storyd.weights import load_lock, resolve

        lock = load_lock()
        paths = {name: Path(resolve(lock.get(name))) for name in model.weights}  # fail before any load
    predictor = load_predictor(motion_weights, device)[0] if motion_weights is not None else None
    if predictor is None:
        note("no trained motion predictor (train one with `storyd train-motion`); "
             "using spherical interpolation of the image tokens")
    if not device.startswith("cuda"):
        note(f"no CUDA GPU: the animatediff backend runs on {device} in float32 and will be very slow")
    dtype = pipeline_dtype(device)
    sd15 = str(paths["sd15-diffusers"])
    encoder = load_clip_encoder(paths["clip-vit-h-14"], device=device, dtype=dtype)
    components = dict(
        vae=AutoencoderKL.from_pretrained(sd15, subfolder="vae", dtype=dtype, local_files_only=True),
        text_encoder=CLIPTextModel.from_pretrained(sd15, subfolder="text_encoder", dtype=dtype, local_files_only=True),
        tokenizer=CLIPTokenizer.from_pretrained(sd15, subfolder="tokenizer", local_files_only=True),
        unet=UNet2DConditionModel.from_pretrained(sd15, subfolder="unet", dtype=dtype, local_files_only=True),
        motion_adapter=MotionAdapter.from_pretrained(str(paths["animatediff-motion-v1-5-3"]), dtype=dtype,
                                                     local_files_only=True),
        controlnet=SparseControlNetModel.from_pretrained(str(paths["sparsectrl-rgb"]), dtype=dtype,
                                                         local_files_only=True),
        scheduler=DPMSolverMultistepScheduler.from_pretrained(
            sd15, subfolder="scheduler", beta_schedule="linear", algorithm_type="dpmsolver++", use_karras_sigmas=True,
            local_files_only=True,
        ),
        image_encoder=encoder.model,
    )
    pipe = assemble_pipeline(components, read_ip_adapter(paths["ip-adapter-plus-sd15"]))
    place_pipeline(pipe, mode, device)
    if predictor is not None:
        predictor.to(dtype)
    note(f"{model.name}: memory mode {mode}{', VAE tiling' if mode != 'none' else ''}")
    return AnimateDiffBackend(pipe, encoder, model, predictor, fit=fit, seed=seed, **settings)
